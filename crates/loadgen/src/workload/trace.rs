//! The Ilúvatar trace formats: a trace (`func_name,invoke_time_ms`, sorted, 0-based) and
//! function metadata (`func_name,cold_dur_ms,warm_dur_ms,mem_mb`, extra columns allowed).
//! Metadata may also hold `cold_samples_ms` and `warm_samples_ms` columns: measured
//! durations separated by spaces (written by `fidelity calibrate`), which a simulation
//! draws each duration from, and `warm_idle_ms`: the idle time before each warm sample.

use crate::workload::csv::{InputError, Records, Table, record};
use std::collections::HashMap;
use std::path::Path;

/// One function of a workload, as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FunctionMeta {
    pub name: String,
    pub cold_dur_ms: f64,
    pub warm_dur_ms: f64,
    pub mem_mb: u64,
    /// Measured cold and warm durations (optional columns; empty when absent).
    pub cold_samples_ms: Vec<f64>,
    pub warm_samples_ms: Vec<f64>,
    /// The idle time before each warm sample (optional; empty, or one per warm sample).
    pub warm_idle_ms: Vec<f64>,
}

/// One invocation to send: which function (an index into the metadata) and when, in
/// milliseconds from the start of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    pub func: usize,
    pub time_ms: f64,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

pub fn read_metadata(path: &Path) -> Result<Vec<FunctionMeta>, InputError> {
    metadata_of(Table::read(path)?)
}

/// Metadata from text; `path` names it in errors.
pub fn parse_metadata(path: &Path, text: &str) -> Result<Vec<FunctionMeta>, InputError> {
    metadata_of(Table::parse(path, text)?)
}

fn metadata_of(t: Table) -> Result<Vec<FunctionMeta>, InputError> {
    let (n, c, w, m) =
        (t.column("func_name")?, t.column("cold_dur_ms")?, t.column("warm_dur_ms")?, t.column("mem_mb")?);
    let (cs, ws, wi) =
        (t.column("cold_samples_ms").ok(), t.column("warm_samples_ms").ok(), t.column("warm_idle_ms").ok());
    let mut out: Vec<FunctionMeta> = Vec::new();
    let mut seen = HashMap::new();
    for (line, row) in &t.rows {
        let name = row[n].trim().to_string();
        if !valid_name(&name) {
            return Err(t.error(
                *line,
                format!("func_name {name:?} may only hold letters, digits, '.', '_' and '-' (1 to 128)"),
            ));
        }
        if let Some(first) = seen.insert(name.clone(), *line) {
            return Err(t.error(*line, format!("function {name:?} is listed twice (first on line {first})")));
        }
        let (cold, warm, mem) = (t.number(*line, row, c)?, t.number(*line, row, w)?, t.number(*line, row, m)?);
        for (col, v) in [("cold_dur_ms", cold), ("warm_dur_ms", warm), ("mem_mb", mem)] {
            if v < 0.0 {
                return Err(t.error(*line, format!("{col} is negative ({v}) for {name:?}")));
            }
        }
        if cold < warm {
            return Err(t.error(*line, format!("cold_dur_ms ({cold}) is below warm_dur_ms ({warm}) for {name:?}")));
        }
        if mem < 1.0 {
            return Err(t.error(*line, format!("mem_mb must be at least 1 for {name:?}")));
        }
        let samples = |col: Option<usize>| -> Result<Vec<f64>, InputError> {
            let Some(col) = col else { return Ok(Vec::new()) };
            let xs: Result<Vec<f64>, _> = row[col].split_whitespace().map(str::parse::<f64>).collect();
            match xs {
                Ok(xs) if xs.iter().all(|x| x.is_finite() && *x >= 0.0) => Ok(xs),
                _ => Err(
                    t.error(*line, format!("{} of {name:?} must be numbers >= 0 separated by spaces", t.header[col]))
                ),
            }
        };
        let (warm_samples_ms, warm_idle_ms) = (samples(ws)?, samples(wi)?);
        if !warm_idle_ms.is_empty() && warm_idle_ms.len() != warm_samples_ms.len() {
            return Err(t.error(
                *line,
                format!("warm_idle_ms of {name:?} must have one number per warm sample ({})", warm_samples_ms.len()),
            ));
        }
        out.push(FunctionMeta {
            cold_samples_ms: samples(cs)?,
            warm_samples_ms,
            warm_idle_ms,
            name,
            cold_dur_ms: cold,
            warm_dur_ms: warm,
            mem_mb: mem.ceil() as u64,
        });
    }
    if out.is_empty() {
        return Err(t.error(0, "no function is listed"));
    }
    Ok(out)
}

/// Reads a trace whose functions must all be in `meta`, record by record (a trace may hold
/// millions of invocations).
pub fn read_trace(path: &Path, meta: &[FunctionMeta]) -> Result<Vec<Arrival>, InputError> {
    let mut records = Records::open(path)?;
    let t = &records.table;
    let (n, time) = (t.column("func_name")?, t.column("invoke_time_ms")?);
    let index: HashMap<&str, usize> = meta.iter().enumerate().map(|(i, f)| (f.name.as_str(), i)).collect();
    let mut out = Vec::new();
    let mut last = 0.0f64;
    while let Some(record) = records.next_record() {
        let (line, row) = record?;
        let t = &records.table;
        let line = &line;
        let name = row[n].trim();
        let func =
            *index.get(name).ok_or_else(|| t.error(*line, format!("function {name:?} is not in the metadata file")))?;
        let ms = t.number(*line, &row, time)?;
        if ms < 0.0 {
            return Err(t.error(*line, format!("invoke_time_ms is negative ({ms})")));
        }
        if ms < last {
            return Err(t.error(*line, format!("the trace is not sorted by time: {ms} ms comes after {last} ms")));
        }
        last = ms;
        out.push(Arrival { func, time_ms: ms });
    }
    if out.is_empty() {
        return Err(records.table.error(0, "the trace holds no invocation"));
    }
    Ok(out)
}

fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 { format!("{}", x as i64) } else { format!("{x:.3}") }
}

/// Writes metadata; the sample columns only if some function has samples.
pub fn write_metadata(path: &Path, meta: &[FunctionMeta]) -> std::io::Result<()> {
    let samples = meta.iter().any(|f| !f.cold_samples_ms.is_empty() || !f.warm_samples_ms.is_empty());
    let mut s = String::from("func_name,cold_dur_ms,warm_dur_ms,mem_mb");
    s.push_str(if samples { ",cold_samples_ms,warm_samples_ms,warm_idle_ms\n" } else { "\n" });
    let list = |xs: &[f64]| xs.iter().map(|x| num(*x)).collect::<Vec<_>>().join(" ");
    for f in meta {
        let mut fields = vec![f.name.clone(), num(f.cold_dur_ms), num(f.warm_dur_ms), f.mem_mb.to_string()];
        if samples {
            fields.extend([list(&f.cold_samples_ms), list(&f.warm_samples_ms), list(&f.warm_idle_ms)]);
        }
        s.push_str(&record(&fields));
    }
    std::fs::write(path, s)
}

/// Writes a trace; the arrivals must be sorted.
pub fn write_trace(path: &Path, meta: &[FunctionMeta], arrivals: &[Arrival]) -> std::io::Result<()> {
    let mut s = String::with_capacity(arrivals.len() * 24);
    s.push_str("func_name,invoke_time_ms\n");
    for a in arrivals {
        s.push_str(&record(&[meta[a.func].name.as_str(), &num(a.time_ms)]));
    }
    std::fs::write(path, s)
}

/// Keeps only the functions the arrivals use (registering others would cost for nothing).
pub fn used_only(meta: Vec<FunctionMeta>, arrivals: &mut [Arrival]) -> Vec<FunctionMeta> {
    let mut map = vec![usize::MAX; meta.len()];
    let mut kept = Vec::new();
    for a in arrivals.iter_mut() {
        if map[a.func] == usize::MAX {
            map[a.func] = kept.len();
            kept.push(meta[a.func].clone());
        }
        a.func = map[a.func];
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str, text: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("lg-trace-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn reads_and_rejects() {
        let m = tmp("m.csv", "func_name,cold_dur_ms,warm_dur_ms,mem_mb,extra\na,100,10,128,x\nb,5,5,64,y\n");
        let meta = read_metadata(&m).unwrap();
        let b = FunctionMeta { name: "b".into(), cold_dur_ms: 5.0, warm_dur_ms: 5.0, mem_mb: 64, ..Default::default() };
        assert_eq!(meta[1], b);
        let t = tmp("t.csv", "func_name,invoke_time_ms\na,0\nb,10\na,10.5\n");
        assert_eq!(read_trace(&t, &meta).unwrap().len(), 3);
        let bad = tmp("u.csv", "func_name,invoke_time_ms\na,10\nb,5\n");
        let e = read_trace(&bad, &meta).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("not sorted"), "{e}");
        let missing = tmp("x.csv", "func_name,invoke_time_ms\nzz,1\n");
        assert!(read_trace(&missing, &meta).unwrap_err().reason.contains("not in the metadata"));
        let neg = tmp("n.csv", "func_name,cold_dur_ms,warm_dur_ms,mem_mb\na,100,-1,128\n");
        assert!(read_metadata(&neg).unwrap_err().to_string().ends_with(":2: warm_dur_ms is negative (-1) for \"a\""));
        let sampled = tmp("s.csv", "func_name,cold_dur_ms,warm_dur_ms,mem_mb,warm_samples_ms\na,100,10,128,9 11.5\n");
        assert_eq!(read_metadata(&sampled).unwrap()[0].warm_samples_ms, vec![9.0, 11.5]);
        write_metadata(&sampled, &read_metadata(&sampled).unwrap()).unwrap();
        let text = std::fs::read_to_string(&sampled).unwrap();
        let want = "func_name,cold_dur_ms,warm_dur_ms,mem_mb,cold_samples_ms,warm_samples_ms,warm_idle_ms\n\
                    a,100,10,128,,9 11.500,\n";
        assert_eq!(text, want);
        let idle = tmp(
            "i.csv",
            "func_name,cold_dur_ms,warm_dur_ms,mem_mb,warm_samples_ms,warm_idle_ms\na,100,10,128,9 11,5\n",
        );
        let e = read_metadata(&idle).unwrap_err().to_string();
        assert!(e.ends_with(":2: warm_idle_ms of \"a\" must have one number per warm sample (2)"), "{e}");
        let bad_sample = tmp("bs.csv", "func_name,cold_dur_ms,warm_dur_ms,mem_mb,cold_samples_ms\na,100,10,128,5 x\n");
        let e = read_metadata(&bad_sample).unwrap_err().to_string();
        assert!(e.ends_with(":2: cold_samples_ms of \"a\" must be numbers >= 0 separated by spaces"), "{e}");
        for p in [m, t, bad, missing, neg, sampled, bad_sample, idle] {
            let _ = std::fs::remove_file(p);
        }
    }
}
