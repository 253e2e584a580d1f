//! A function's requirements.txt, read as untrusted input: only plain requirements (a name,
//! extras, version specifiers, an environment marker, `--hash` options) are accepted. pip's
//! own file format can also include other files (`-r`), name indexes (`--index-url`), local
//! paths, URLs and environment variables; none of that is allowed, so a function cannot make
//! the worker's pip read host files or fetch from anywhere but the operator's index.

/// Largest requirements.txt read.
pub const MAX_BYTES: u64 = 64 * 1024;

/// Why a requirements file is refused: the line (1-based) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequirements {
    #[error("requirements.txt is over {MAX_BYTES} bytes")]
    TooLarge,
    #[error("requirements.txt is not UTF-8 text")]
    NotText,
    #[error("requirements.txt line {line} ({text:?}): {why}")]
    Line { line: usize, text: String, why: &'static str },
}

const OPTION: &str = "options (-r, -c, -e, --index-url, --find-links, ...) are not allowed: only requirements \
                      (a name, extras, versions, a marker; --hash is accepted)";
const LINE_CONTINUATION: &str = "line continuations are not supported: write each requirement on one line";
const DIRECT: &str = "direct references (name @ url) are not allowed: name a package of the index";
const NOT_A_REQUIREMENT: &str = "not a requirement: expected a package name, optionally [extras], version \
                                 specifiers and '; marker' (URLs, paths and variables are not allowed)";
const BAD_HASH: &str = "a --hash must be --hash=sha256:HEX (or sha384, sha512)";

/// The requirements of a file, normalised: one per line, comments and blank lines dropped,
/// sorted and without duplicates (so files that differ only in those share a layer). Empty
/// when the file names no requirement.
pub fn parse(bytes: &[u8]) -> Result<Vec<String>, BadRequirements> {
    if bytes.len() as u64 > MAX_BYTES {
        return Err(BadRequirements::TooLarge);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| BadRequirements::NotText)?;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let bad = |why| BadRequirements::Line { line: i + 1, text: shown(raw), why };
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        if line.ends_with('\\') {
            return Err(bad(LINE_CONTINUATION));
        }
        if line.starts_with('-') {
            return Err(bad(OPTION));
        }
        out.push(requirement(line).map_err(bad)?);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// A line cut to a readable length for error messages.
fn shown(raw: &str) -> String {
    let mut s: String = raw.chars().take(80).collect();
    if raw.chars().count() > 80 {
        s.push_str("...");
    }
    s
}

/// pip's comment rule: `#` at the start of a line or after whitespace.
fn strip_comment(line: &str) -> &str {
    let b = line.as_bytes();
    for (i, c) in b.iter().enumerate() {
        if *c == b'#' && (i == 0 || b[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// A PEP 508 name: letters and digits, with `.`, `_`, `-` inside.
fn is_name(s: &str) -> bool {
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    ends_ok(s.chars().next()) && ends_ok(s.chars().last()) && s.chars().all(is_name_char)
}

/// One requirement line (no comment, trimmed, not an option), checked and normalised:
/// whitespace runs become one space.
fn requirement(line: &str) -> Result<String, &'static str> {
    // `--hash=...` options may follow the requirement.
    let (spec, hashes) = match line.find(" --") {
        Some(i) => (&line[..i], &line[i..]),
        None => (line, ""),
    };
    let mut tokens = Vec::new();
    for token in hashes.split_whitespace() {
        let Some(h) = token.strip_prefix("--hash=") else { return Err(OPTION) };
        let ok = h.split_once(':').is_some_and(|(algo, hex)| {
            matches!(algo, "sha256" | "sha384" | "sha512")
                && !hex.is_empty()
                && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
        if !ok {
            return Err(BAD_HASH);
        }
        tokens.push(token);
    }
    if spec.contains('@') {
        return Err(DIRECT);
    }
    let (head, marker) = match spec.split_once(';') {
        Some((h, m)) => (h, Some(m)),
        None => (spec, None),
    };
    let name_end = head.find(|c: char| !is_name_char(c)).unwrap_or(head.len());
    let (name, mut rest) = head.split_at(name_end);
    if !is_name(name) {
        return Err(NOT_A_REQUIREMENT);
    }
    rest = rest.trim_start();
    if let Some(after) = rest.strip_prefix('[') {
        let (extras, tail) = after.split_once(']').ok_or(NOT_A_REQUIREMENT)?;
        if !extras.split(',').map(str::trim).all(|e| e.is_empty() || is_name(e)) {
            return Err(NOT_A_REQUIREMENT);
        }
        rest = tail;
    }
    // Version specifiers: operators, versions, commas, wildcards, parentheses.
    let version_char = |c: char| c.is_ascii_alphanumeric() || " \t<>=!~,.*+()_-".contains(c);
    if !rest.chars().all(version_char) {
        return Err(NOT_A_REQUIREMENT);
    }
    // Markers compare variables with quoted strings: no paths, URLs or `$` variables.
    let marker_char = |c: char| c.is_ascii_alphanumeric() || " \t<>=!~,.*+()_-'\"".contains(c);
    if marker.is_some_and(|m| m.trim().is_empty() || !m.chars().all(marker_char)) {
        return Err(NOT_A_REQUIREMENT);
    }
    let mut normal = spec.split_whitespace().collect::<Vec<_>>().join(" ");
    for t in tokens {
        normal.push(' ');
        normal.push_str(t);
    }
    Ok(normal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Vec<String> {
        parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn refused(text: &str) -> (usize, &'static str) {
        match parse(text.as_bytes()) {
            Err(BadRequirements::Line { line, why, .. }) => (line, why),
            other => panic!("{text:?} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn plain_requirements_are_normalised_sorted_and_deduplicated() {
        let text = "# numeric\nnumpy==2.2.6   # pinned\n\n  pillow >=10,  <12\nnumpy==2.2.6\nJinja2[i18n]~=3.1\n\
                    tomli; python_version < \"3.11\"\nsix==1.16.0 --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254\n";
        assert_eq!(
            ok(text),
            [
                "Jinja2[i18n]~=3.1",
                "numpy==2.2.6",
                "pillow >=10, <12",
                "six==1.16.0 --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254",
                "tomli; python_version < \"3.11\"",
            ]
        );
        assert!(ok("# nothing\n\n   \n").is_empty());
        assert_eq!(refused("a#b\n"), (1, NOT_A_REQUIREMENT), "a # inside a word is not a comment");
    }

    #[test]
    fn options_includes_urls_paths_and_variables_are_refused_with_their_line() {
        assert_eq!(refused("numpy\n-r /etc/passwd\n"), (2, OPTION));
        assert_eq!(refused("--index-url http://evil.example/simple\n"), (1, OPTION));
        assert_eq!(refused("-e git+https://example.com/x.git#egg=x\n"), (1, OPTION));
        assert_eq!(refused("--find-links /tmp\n"), (1, OPTION));
        assert_eq!(refused("numpy --index-url=http://evil\n"), (1, OPTION));
        assert_eq!(refused("x @ file:///etc/passwd\n"), (1, DIRECT));
        assert_eq!(refused("x@https://example.com/x.whl\n"), (1, DIRECT));
        assert_eq!(refused("https://example.com/x.whl\n"), (1, NOT_A_REQUIREMENT));
        assert_eq!(refused("./local/package\n"), (1, NOT_A_REQUIREMENT));
        assert_eq!(refused("/abs/package.whl\n"), (1, NOT_A_REQUIREMENT));
        assert_eq!(refused("pkg==${VERSION}\n"), (1, NOT_A_REQUIREMENT));
        assert_eq!(refused("pkg; sys_platform == '$(id)'\n"), (1, NOT_A_REQUIREMENT));
        assert_eq!(refused("pkg;\n"), (1, NOT_A_REQUIREMENT));
        assert_eq!(refused("pkg[../x]\n"), (1, NOT_A_REQUIREMENT));
        assert_eq!(refused("numpy \\\n  ==1\n"), (1, LINE_CONTINUATION));
        assert_eq!(refused("six --hash=md5:abc\n"), (1, BAD_HASH));
        assert_eq!(refused("six --hash=sha256:xyz\n"), (1, BAD_HASH));
        assert_eq!(refused("-pkg\n"), (1, OPTION));
        assert_eq!(refused("pkg-\n"), (1, NOT_A_REQUIREMENT));
    }

    #[test]
    fn sizes_and_encodings_are_bounded() {
        let big = "a\n".repeat(MAX_BYTES as usize);
        assert_eq!(parse(big.as_bytes()), Err(BadRequirements::TooLarge));
        assert_eq!(parse(b"numpy\n\xff\xfe\n"), Err(BadRequirements::NotText));
        let long = format!("{}\n", "-".repeat(500));
        let Err(e) = parse(long.as_bytes()) else { panic!("refused") };
        assert!(e.to_string().len() < 400, "a long line is cut in the message: {e}");
    }
}
