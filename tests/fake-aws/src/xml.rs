//! Writing the XML that AWS answers with.

use std::fmt::Write;

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// An XML document built element by element.
#[derive(Default)]
pub struct Xml(pub String);

impl Xml {
    /// `<name>value</name>`, escaped.
    pub fn el(&mut self, name: &str, value: &str) -> &mut Xml {
        let _ = write!(self.0, "<{name}>{}</{name}>", escape(value));
        self
    }

    /// `<name>value</name>` when there is a value.
    pub fn opt(&mut self, name: &str, value: Option<&str>) -> &mut Xml {
        if let Some(v) = value {
            self.el(name, v);
        }
        self
    }

    pub fn open(&mut self, name: &str) -> &mut Xml {
        let _ = write!(self.0, "<{name}>");
        self
    }

    pub fn close(&mut self, name: &str) -> &mut Xml {
        let _ = write!(self.0, "</{name}>");
        self
    }
}
