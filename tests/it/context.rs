//! The build context, compared with the docker CLI's on the same tree.
//!
//! Both contexts are built into a `FROM scratch` image by the same engine with
//! `COPY . /ctx/`; the file lists of the two images must be identical.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::support::{docker, need_engine, temp_dir};

const DOCKERIGNORE: &str = "\
# a comment
*.log
!keep.log
build/
!build/keep/
docs/**/*.md
!docs/README.md
/abs.txt
**/tmp
sub/*/x
node_modules
a?c
[b]rack*
  spaced.txt  
! reincluded.log
";

fn make_tree(root: &Path) {
    let files = [
        "a.log",
        "keep.log",
        "reincluded.log",
        "x/b.log",
        "build/out.o",
        "build/keep/y",
        "docs/README.md",
        "docs/a/b.md",
        "docs/a/c.txt",
        "abs.txt",
        "sub/abs.txt",
        "tmp/t",
        "deep/er/tmp/t",
        "sub/q/x",
        "sub/q/y",
        "sub/x",
        "node_modules/m/i.js",
        "abc",
        "a/c",
        "brackety",
        "spaced.txt",
        "src/main.rs",
        ".hidden",
        "Dockerfile.other",
    ];
    for f in files {
        let p = root.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, f).unwrap();
    }
    std::fs::create_dir_all(root.join("emptydir")).unwrap();
    std::os::unix::fs::symlink("src/main.rs", root.join("link")).unwrap();
    std::fs::write(root.join(".dockerignore"), DOCKERIGNORE).unwrap();
    std::fs::write(root.join("Dockerfile"), "FROM scratch\nCOPY . /ctx/\n").unwrap();
    // A large file that is ignored: sparse, so it costs no disk, but reading it would
    // cost seconds and sending it would show in the context size.
    let big = std::fs::File::create(root.join("huge.log")).unwrap();
    big.set_len(2 << 30).unwrap();
}

/// Paths under /ctx in an image.
fn files_in(image: &str) -> BTreeSet<String> {
    let id = docker(&["create", image, "none"]);
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("docker export {id} | tar -t"))
        .output()
        .unwrap();
    docker(&["rm", &id]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("ctx/") && *l != "ctx/")
        .map(|l| l.trim_end_matches('/').to_string())
        .collect()
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn dockerignore_matches_docker_cli() {
    need_engine();
    let root = temp_dir("context");
    make_tree(&root);
    let tag = format!("pym-it-context-{}", std::process::id());

    // The docker CLI, with the classic builder (what the engine here speaks).
    let cli_tag = format!("{tag}:cli");
    let st = Command::new("docker")
        .args(["build", "-q", "-t", &cli_tag, "."])
        .env("DOCKER_BUILDKIT", "0")
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&st.stderr)
    );

    // Ours, through the library's build op.
    let ours_tag = format!("{tag}:ours");
    let printer = pymdeploy::output::Printer::from_env();
    let progress = printer.step("context");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let built = rt
        .block_on(async {
            let engine =
                pymdeploy::ops::engine::connect(&pymdeploy::ops::engine::Endpoint::resolve()?)
                    .await?;
            let req = pymdeploy::ops::docker::BuildRequest {
                root: &root,
                dockerfile: "Dockerfile",
                tag: &ours_tag,
                build_args: Default::default(),
                labels: Default::default(),
            };
            pymdeploy::ops::docker::build(&engine, req, &progress).await
        })
        .unwrap();
    progress.finish(&pymdeploy::output::Outcome::Ok, "");

    let cli = files_in(&cli_tag);
    let ours = files_in(&ours_tag);
    docker(&["rmi", &cli_tag, &ours_tag]);
    assert_eq!(ours, cli, "our context differs from the docker CLI's");
    // And the rules did something: spot checks against hand-worked expectations. Note
    // `x/b.log`: unlike gitignore, `*.log` matches at the root only.
    for kept in [
        "ctx/keep.log",
        "ctx/reincluded.log",
        "ctx/build/keep/y",
        "ctx/docs/README.md",
        "ctx/docs/a/c.txt",
        "ctx/sub/abs.txt",
        "ctx/sub/x",
        "ctx/sub/q/y",
        "ctx/a/c",
        "ctx/link",
        "ctx/emptydir",
        "ctx/x/b.log",
    ] {
        assert!(ours.contains(kept), "{kept} should be sent: {ours:?}");
    }
    for gone in [
        "ctx/a.log",
        "ctx/build/out.o",
        "ctx/docs/a/b.md",
        "ctx/abs.txt",
        "ctx/tmp",
        "ctx/deep/er/tmp",
        "ctx/sub/q/x",
        "ctx/node_modules",
        "ctx/abc",
        "ctx/brackety",
        "ctx/spaced.txt",
        "ctx/huge.log",
    ] {
        assert!(!ours.contains(gone), "{gone} should not be sent");
    }
    assert!(
        built.context_bytes < 1 << 20,
        "the ignored 2 GiB file was counted: {} bytes",
        built.context_bytes
    );
}
