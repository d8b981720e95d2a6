//! Acceptance tests: they run against a real server, wherever the pipeline started it.

use testaccept::Server;

#[test]
fn ping_answers_an_empty_object() {
    let r = Server::from_env().get("/ping");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), serde_json::json!({}));
}

#[test]
fn version_names_the_environment_it_runs_in() {
    let server = Server::from_env();
    let r = server.get("/version");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["name"], "{{name}}");
    assert_eq!(v["pym_env"], server.env.as_str());
    assert!(v["version"].as_str().is_some_and(|s| !s.is_empty() && s != "dev"), "no version baked into the image: {v}");
}
