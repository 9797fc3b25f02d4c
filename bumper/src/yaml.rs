//! YAML with byte spans: a thin tree over `saphyr-parser`'s event stream
//! that remembers where every scalar sits in the source, so edits can be
//! splices of the original text, and the check that an edit changed only
//! the scalars it meant to (both texts parsed, event streams compared).
//!
//! Nothing here ever serialises YAML: text goes out exactly as it came in
//! apart from the spliced ranges.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle};

/// A parse failure, with the 1-based line it happened on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct YamlError {
    /// 1-based line.
    pub(crate) line: usize,
    /// What the parser said.
    pub(crate) message: String,
}

/// One scalar node and where it is.
#[derive(Debug, Clone)]
pub(crate) struct Scalar {
    pub(crate) value: String,
    pub(crate) style: ScalarStyle,
    /// Byte range of the whole node in the source (anchor and tag included).
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// 1-based line of `start`.
    pub(crate) line: usize,
    /// Index of its event in the stream (the key for verification).
    pub(crate) event: usize,
}

/// A node of the tree.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Scalar(Scalar),
    Map(Vec<(Node, Node)>),
    Seq(Vec<Node>),
    Alias(usize),
}

/// A parsed YAML stream: its documents and its anchors.
#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) docs: Vec<Node>,
    anchors: HashMap<usize, Node>,
}

impl Stream {
    /// Follow an alias to the node it names (other nodes are returned as
    /// they are).
    pub(crate) fn resolve<'a>(&'a self, node: &'a Node) -> &'a Node {
        match node {
            Node::Alias(id) => self.anchors.get(id).unwrap_or(node),
            _ => node,
        }
    }
}

/// Character index → byte offset (saphyr counts characters).
struct CharIndex(Option<Vec<usize>>);

impl CharIndex {
    fn new(text: &str) -> Self {
        if text.is_ascii() {
            return Self(None);
        }
        let mut v: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
        v.push(text.len());
        Self(Some(v))
    }

    fn byte(&self, chars: usize) -> usize {
        match &self.0 {
            None => chars,
            Some(v) => v.get(chars).copied().unwrap_or(usize::MAX),
        }
    }
}

/// Parse `text` into its event list (no spans), for comparison.
pub(crate) fn events(text: &str) -> Result<Vec<Event<'_>>, YamlError> {
    Parser::new_from_str(text)
        .map(|r| r.map(|(ev, _)| ev).map_err(scan_error))
        .collect()
}

fn scan_error(e: saphyr_parser::ScanError) -> YamlError {
    YamlError {
        line: e.marker().line(),
        message: e.info().to_owned(),
    }
}

enum Frame {
    Map(usize, Vec<Node>),
    Seq(usize, Vec<Node>),
}

/// Parse `text` into a tree with byte spans.
pub(crate) fn parse(text: &str) -> Result<Stream, YamlError> {
    let idx = CharIndex::new(text);
    let mut docs = Vec::new();
    let mut anchors = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    for (event, item) in Parser::new_from_str(text).enumerate() {
        let (ev, span) = item.map_err(scan_error)?;
        let node = match ev {
            Event::Scalar(value, style, anchor, _) => {
                let node = Node::Scalar(Scalar {
                    value: value.into_owned(),
                    style,
                    start: idx.byte(span.start.index()),
                    end: idx.byte(span.end.index()),
                    line: span.start.line(),
                    event,
                });
                if anchor != 0 {
                    anchors.insert(anchor, node.clone());
                }
                node
            }
            Event::Alias(id) => Node::Alias(id),
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map(anchor, Vec::new()));
                continue;
            }
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq(anchor, Vec::new()));
                continue;
            }
            Event::MappingEnd | Event::SequenceEnd => {
                let (anchor, node) = match stack.pop() {
                    Some(Frame::Map(a, items)) => {
                        let mut pairs = Vec::with_capacity(items.len() / 2);
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            pairs.push((k, v));
                        }
                        (a, Node::Map(pairs))
                    }
                    Some(Frame::Seq(a, items)) => (a, Node::Seq(items)),
                    None => continue,
                };
                if anchor != 0 {
                    anchors.insert(anchor, node.clone());
                }
                node
            }
            _ => continue,
        };
        match stack.last_mut() {
            Some(Frame::Map(_, items) | Frame::Seq(_, items)) => items.push(node),
            None => docs.push(node),
        }
    }
    Ok(Stream { docs, anchors })
}

impl Scalar {
    /// The byte range in `text` that holds the scalar's value verbatim, if
    /// it is written on one line with no escapes (plain or quoted). Edits
    /// replace exactly this range; anything fancier is refused.
    pub(crate) fn raw_region(&self, text: &str) -> Option<(usize, usize)> {
        let src = text.get(self.start..self.end)?;
        let (start, end) = match self.style {
            ScalarStyle::Plain => {
                let s = src.strip_suffix(self.value.as_str())?;
                (self.start + s.len(), self.end)
            }
            ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => {
                let q = if self.style == ScalarStyle::SingleQuoted {
                    b'\''
                } else {
                    b'"'
                };
                // The closing quote is the first one not escaped (`\"` in
                // double quotes, `''` in single quotes); the parser's span
                // may run past it.
                let open = src.bytes().position(|c| c == q)?;
                let b = src.as_bytes();
                let mut i = open + 1;
                let close = loop {
                    match b.get(i)? {
                        b'\\' if q == b'"' => i += 2,
                        c if *c == q && q == b'\'' && b.get(i + 1) == Some(&q) => i += 2,
                        c if *c == q => break i,
                        _ => i += 1,
                    }
                };
                (self.start + open + 1, self.start + close)
            }
            _ => return None,
        };
        (text.get(start..end)? == self.value && !self.value.contains(['\n', '\r']))
            .then_some((start, end))
    }

    /// For a literal block scalar (`|`): the byte offset in `text` where
    /// each line of the value starts, so that an offset inside the value
    /// maps to an offset in the file. `None` if the value's lines are not
    /// verbatim in the source (which would make splicing unsafe).
    pub(crate) fn literal_lines(&self, text: &str) -> Option<Vec<usize>> {
        if self.style != ScalarStyle::Literal {
            return None;
        }
        let line_start = text[..self.start].rfind('\n').map_or(0, |i| i + 1);
        let indent = self.start - line_start;
        let mut out = Vec::new();
        let mut src = line_start;
        for line in self.value.split_inclusive('\n') {
            let content = line.strip_suffix('\n').unwrap_or(line);
            let src_end = text[src..].find('\n').map_or(text.len(), |i| src + i);
            let src_line = text[src..src_end]
                .strip_suffix('\r')
                .unwrap_or(&text[src..src_end]);
            if content.is_empty() {
                if !src_line.trim_start_matches(' ').is_empty() {
                    return None;
                }
                out.push(src + src_line.len());
            } else {
                if src_line.get(indent..)? != content {
                    return None;
                }
                out.push(src + indent);
            }
            src = src_end + 1;
        }
        Some(out)
    }
}

/// A replacement of `text[start..end]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Splice {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) text: String,
}

/// Apply non-overlapping splices to `text`.
pub(crate) fn apply(text: &str, splices: &[Splice]) -> Option<String> {
    let mut sorted: Vec<&Splice> = splices.iter().collect();
    sorted.sort_by_key(|s| s.start);
    let mut out = String::with_capacity(text.len() + 128);
    let mut at = 0;
    for s in sorted {
        if s.start < at || s.end < s.start {
            return None;
        }
        out.push_str(text.get(at..s.start)?);
        out.push_str(&s.text);
        at = s.end;
    }
    out.push_str(text.get(at..)?);
    Some(out)
}

/// Check that `new` parses to exactly the events of `old` except the
/// scalars in `targets` (event index → expected new value), which must
/// keep their style and anchor. Returns the 1-based line of the first
/// difference in `new` otherwise.
pub(crate) fn verify(
    old: &str,
    new: &str,
    targets: &HashMap<usize, String>,
) -> Result<(), (usize, String)> {
    let a = events(old).map_err(|e| (e.line, e.message))?;
    let mut b = Vec::with_capacity(a.len());
    let mut lines = Vec::with_capacity(a.len());
    // The parser keeps yielding after an error: stop at the first one.
    for item in Parser::new_from_str(new) {
        let (ev, span) = item.map_err(|e| {
            let e = scan_error(e);
            (
                e.line,
                format!("the edited file does not parse: {}", e.message),
            )
        })?;
        b.push(ev);
        lines.push(span.start.line());
    }
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let ok = match targets.get(&i) {
            Some(want) => match (x, y) {
                (Event::Scalar(_, s1, a1, t1), Event::Scalar(v2, s2, a2, t2)) => {
                    s1 == s2 && a1 == a2 && t1 == t2 && v2 == want
                }
                _ => false,
            },
            None => x == y,
        };
        if !ok {
            return Err((
                lines[i],
                "the edit changed more than the targeted value".into(),
            ));
        }
    }
    if a.len() != b.len() {
        let line = lines.get(a.len().min(b.len())).copied().unwrap_or(1);
        return Err((line, "the edit changed the document structure".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_scalar_value<'a>(s: &'a Stream, key: &str) -> &'a Scalar {
        let Node::Map(pairs) = &s.docs[0] else {
            panic!("not a map")
        };
        for (k, v) in pairs {
            if let (Node::Scalar(k), Node::Scalar(v)) = (k, s.resolve(v)) {
                if k.value == key {
                    return v;
                }
            }
        }
        panic!("no {key}")
    }

    #[test]
    fn raw_regions_of_each_style_and_crlf() {
        let text =
            "a: &x plain value\r\nb: \"dq\"\r\nc: 'sq'\r\nd: \"e\\\"x\"\r\ne: *x\r\nf: ünï\r\n";
        let s = parse(text).unwrap();
        for (key, want) in [("a", "plain value"), ("b", "dq"), ("c", "sq"), ("f", "ünï")] {
            let sc = first_scalar_value(&s, key);
            let (start, end) = sc.raw_region(text).unwrap();
            assert_eq!(&text[start..end], want, "{key}");
        }
        // An escaped value is not verbatim in the source: no region.
        assert_eq!(first_scalar_value(&s, "d").raw_region(text), None);
        // The alias resolves to the anchored scalar.
        assert_eq!(first_scalar_value(&s, "e").value, "plain value");
    }

    #[test]
    fn literal_lines_map_into_the_file() {
        let text = "x: 1\r\nvalues: |\r\n  image:\r\n\r\n    repository: r\r\n  tag: t\r\nz: 2\r\n";
        let s = parse(text).unwrap();
        let sc = first_scalar_value(&s, "values");
        let lines = sc.literal_lines(text).unwrap();
        for (line, off) in sc.value.split_inclusive('\n').zip(&lines) {
            let l = line.trim_end_matches('\n');
            assert_eq!(&text[*off..*off + l.len()], l);
        }
    }

    #[test]
    fn verify_accepts_only_targeted_changes() {
        let old = "a: x\nb: y # keep\n";
        let s = parse(old).unwrap();
        let b = first_scalar_value(&s, "b");
        let (start, end) = b.raw_region(old).unwrap();
        let new = apply(
            old,
            &[Splice {
                start,
                end,
                text: "z".into(),
            }],
        )
        .unwrap();
        assert_eq!(new, "a: x\nb: z # keep\n");
        let mut t = HashMap::new();
        t.insert(b.event, "z".to_owned());
        verify(old, &new, &t).unwrap();
        // Changing anything else is caught, with its line.
        assert_eq!(verify(old, "a: q\nb: z\n", &t).unwrap_err().0, 1);
        // Changing the structure is caught.
        assert!(verify(old, "a: x\nb: z\nc: 1\n", &t).is_err());
        // A splice that breaks the syntax is caught.
        assert!(verify(old, "a: x\nb: z: :\n", &t).is_err());
    }
}
