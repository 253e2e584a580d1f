//! The README's HTTP examples, run as written. In a section's ```sh blocks, a command is a
//! line starting with `curl` (and the lines after it, up to the next `#` line); the `#`
//! lines after it are what it answers: `# STATUS BODY`, or the output alone when the command
//! is a pipeline. In what is expected, `...` stands for any text, and whitespace is not
//! compared (long answers are wrapped over several `#` lines).

use crate::{output_timeout, unique_dir};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// One documented command and what it answers.
#[derive(Debug, Clone)]
pub struct Example {
    /// Its line in README.md (1-based).
    pub line: usize,
    pub command: String,
    /// The HTTP status it answers, when the README says.
    pub status: Option<u16>,
    /// The output, `...` for any text.
    pub expected: String,
}

/// README.md of the repository.
pub fn readme() -> String {
    let path = crate::fixtures::tests_dir().join("../README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The examples of the README section under `heading` (e.g. `### HTTP API`), up to the
/// next heading of the same or a higher level.
pub fn examples(readme: &str, heading: &str) -> Vec<Example> {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let lines: Vec<&str> = readme.lines().collect();
    let start = lines.iter().position(|l| *l == heading).unwrap_or_else(|| panic!("README has no {heading:?}"));
    let is_end = |l: &str| {
        let hashes = l.chars().take_while(|c| *c == '#').count();
        hashes > 0 && hashes <= level && l[hashes..].starts_with(' ')
    };
    let mut out = Vec::new();
    let (mut in_block, mut i) = (false, start + 1);
    while i < lines.len() && (in_block || !is_end(lines[i])) {
        let l = lines[i];
        if l.starts_with("```") {
            in_block = l == "```sh" && !in_block;
            i += 1;
            continue;
        }
        if !(in_block && l.starts_with("curl ")) {
            i += 1;
            continue;
        }
        let line = i + 1;
        let mut command = vec![l];
        i += 1;
        while i < lines.len() && !lines[i].starts_with('#') && !lines[i].starts_with("```") {
            command.push(lines[i]);
            i += 1;
        }
        let mut expected = String::new();
        while i < lines.len() && lines[i].starts_with('#') {
            expected.push_str(lines[i].trim_start_matches('#'));
            i += 1;
        }
        let expected = expected.trim();
        let status = expected.split_whitespace().next().filter(|s| s.len() == 3).and_then(|s| s.parse().ok());
        let expected = match status {
            Some(_) => expected[3..].trim().to_string(),
            None => expected.to_string(),
        };
        out.push(Example { line, command: command.join("\n"), status, expected });
    }
    out
}

/// Whether `actual` matches `pattern` (`...` for any text), whitespace aside.
pub fn matches(pattern: &str, actual: &str) -> bool {
    let squeeze = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    let (pattern, actual) = (squeeze(pattern), squeeze(actual));
    let parts: Vec<&str> = pattern.split("...").collect();
    if parts.len() == 1 {
        return pattern == actual;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first) || actual.len() < first.len() + last.len() || !actual.ends_with(last) {
        return false;
    }
    let mut rest = &actual[first.len()..actual.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// The method and path of a curl command's request to `$var`: POST with `--json` or `-d`,
/// the method of `-X`, else GET.
pub fn request_of(command: &str, var: &str) -> (String, String) {
    let words: Vec<&str> = command.split_whitespace().collect();
    let method = match words.iter().position(|w| *w == "-X") {
        Some(i) => words.get(i + 1).copied().unwrap_or("").to_string(),
        None if words.iter().any(|w| *w == "--json" || *w == "-d") => "POST".into(),
        None => "GET".into(),
    };
    let prefix = format!("${var}/");
    let path = words.iter().find_map(|w| w.strip_prefix(&prefix)).unwrap_or("");
    (method, format!("/{path}"))
}

/// Whether a route like `GET /invoke_async/{cookie}` is what `(method, path)` asks for.
pub fn route_is(route: &str, method: &str, path: &str) -> bool {
    let Some((m, pattern)) = route.split_once(' ') else { return false };
    let (want, got): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    m == method
        && want.len() == got.len()
        && want.iter().zip(&got).all(|(w, g)| (w.starts_with('{') && !g.is_empty()) || w == g)
}

/// Runs `examples` in order with `sh`, each with `var` set to `address` and `COOKIE` to the
/// last `lookup_cookie` answered, and checks each answer; panics naming the README line of
/// the first that differs. An async result still running (202) is asked again.
pub fn run(examples: &[Example], var: &str, address: &str) {
    assert!(
        Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success()),
        "the README's examples run with curl: install it (apt-get install curl; .ci/run does)"
    );
    let dir = unique_dir("readme");
    // Every curl prints the status on a line of its own after the body (curl reads
    // CURL_HOME/.curlrc), so the commands run exactly as written.
    std::fs::write(dir.join(".curlrc"), "write-out = \"\\n%{http_code}\"\nmax-time = 30\n").unwrap();
    let mut cookie = String::new();
    for e in examples {
        let mut tries = 0;
        let (status, body) = loop {
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(&e.command).current_dir(&dir);
            cmd.env("CURL_HOME", &dir).env(var, address).env("COOKIE", &cookie);
            let out = output_timeout(cmd, Duration::from_secs(60));
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "README line {}: `{}` failed ({}): {}",
                e.line,
                e.command,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            let (body, status) = match e.status {
                Some(_) => match text.rsplit_once('\n') {
                    Some((b, s)) => (b.to_string(), s.trim().parse::<u16>().ok()),
                    None => (String::new(), text.trim().parse().ok()),
                },
                None => (text, None),
            };
            if status == Some(202) && e.status == Some(200) && tries < 100 {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            break (status, body);
        };
        if let Some(c) =
            serde_json::from_str::<Value>(&body).ok().and_then(|v| v["lookup_cookie"].as_str().map(String::from))
        {
            cookie = c;
        }
        assert_eq!(status, e.status, "README line {}: `{}` answered status {status:?}:\n{body}", e.line, e.command);
        assert!(
            matches(&e.expected, &body),
            "README line {}: `{}` answered\n{body}\nwhere the README shows\n{}",
            e.line,
            e.command,
            e.expected
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_any_text_for_dots_and_ignore_whitespace() {
        assert!(matches(r#"{"a":1}"#, "{\"a\": 1}\n"));
        assert!(!matches(r#"{"a":1}"#, r#"{"a":2}"#));
        assert!(matches(r#"{"a":...,"b":2}"#, r#"{"a":"x y","b":2}"#));
        assert!(matches("...", "anything"));
        assert!(matches("a...b...c", "a1b2c"));
        assert!(!matches("a...b...c", "a1c2b"));
        assert!(!matches("ab...ba", "aba"), "prefix and suffix may not overlap");
    }

    #[test]
    fn commands_with_their_answers_are_read_from_a_section() {
        let text = "# T\n## S\ntext\n```sh\nH=x\ncurl -s $H/ping   # c\n# 200 {\"m\":\n#   1}\ncurl -s --json '{\n  \"a\":1}' $H/f/x\n# 404 ...\ncurl -s $H/m | grep a\n# a 1\n```\n## Next\n```sh\ncurl -s $H/no\n# 200 {}\n```\n";
        let ex = examples(text, "## S");
        assert_eq!(ex.len(), 3, "{ex:?}");
        assert_eq!((ex[0].line, ex[0].status, ex[0].expected.as_str()), (6, Some(200), "{\"m\":   1}"));
        assert_eq!(ex[1].command, "curl -s --json '{\n  \"a\":1}' $H/f/x");
        assert_eq!(request_of(&ex[1].command, "H"), ("POST".to_string(), "/f/x".to_string()));
        assert_eq!((ex[2].status, ex[2].expected.as_str()), (None, "a 1"));
        assert!(route_is("POST /f/{id}", "POST", "/f/x"));
        assert!(!route_is("POST /f/{id}", "GET", "/f/x") && !route_is("POST /f", "POST", "/f/x"));
        assert_eq!(request_of("curl -s -X DELETE $C/workers/w", "C"), ("DELETE".to_string(), "/workers/w".to_string()));
    }
}
