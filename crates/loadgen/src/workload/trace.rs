//! The Ilúvatar trace formats: a trace (`func_name,invoke_time_ms`, sorted, 0-based) and
//! function metadata (`func_name,cold_dur_ms,warm_dur_ms,mem_mb`, more columns allowed).
//! Metadata may also hold `cold_samples_ms` and `warm_samples_ms` columns: measured
//! durations separated by spaces (written by `fidelity calibrate`), which a simulation
//! draws each duration from, and `warm_idle_ms`: the idle time before each warm sample.
//! The reference platform's columns `prewarms` (containers to prewarm), `image_name` (the
//! function's code or image, registered live instead of the synthetic function) and
//! `mean_iat` (the mean inter-arrival time, ms) are read too; any other column is named in
//! a warning and ignored.

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
    /// Containers to prewarm (`prewarms`; none when absent or empty).
    pub prewarms: Option<u32>,
    /// The function's code or image (`image_name`), registered as it is on a live worker;
    /// a relative `code:`/`oci:`/`oci-archive:` path is taken from the metadata's folder.
    pub image_name: Option<String>,
    /// The mean time between the function's invocations (`mean_iat`, ms).
    pub mean_iat_ms: Option<f64>,
}

/// The metadata columns this load generator reads.
pub const UNDERSTOOD: [&str; 10] = [
    "func_name",
    "cold_dur_ms",
    "warm_dur_ms",
    "mem_mb",
    "cold_samples_ms",
    "warm_samples_ms",
    "warm_idle_ms",
    "prewarms",
    "image_name",
    "mean_iat",
];

/// The most containers a metadata row may ask to prewarm.
pub const MAX_PREWARMS: u32 = 1000;

/// Why a column of the reference platform's metadata is not read here.
fn not_read(column: &str) -> Option<&'static str> {
    Some(match column {
        "compute" => "only CPU compute exists here",
        "isolation" => "live functions run on --isolation's backend",
        "args" => "invocations of image_name functions carry no arguments",
        "use_lookbusy" => "functions/synthetic plays every function without an image_name",
        _ => return None,
    })
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

/// Reads a metadata file; a warning on stderr names the columns it does not read.
pub fn read_metadata(path: &Path) -> Result<Vec<FunctionMeta>, InputError> {
    let (mut meta, warnings) = metadata_of(Table::read(path)?)?;
    for w in warnings {
        eprintln!("warning: {}: {w}", path.display());
    }
    let dir = path.parent().map(|d| if d.as_os_str().is_empty() { Path::new(".") } else { d });
    if let Some(dir) = dir.and_then(|d| std::path::absolute(d).ok()) {
        for f in &mut meta {
            if let Some(image) = &mut f.image_name {
                *image = relative_to(image, &dir);
            }
        }
    }
    Ok(meta)
}

/// `image` with a relative local path (`code:`, `oci:`, `oci-archive:`) made absolute
/// from `dir`; other references unchanged.
fn relative_to(image: &str, dir: &Path) -> String {
    for scheme in ["code:", "oci:", "oci-archive:"] {
        if let Some(rest) = image.strip_prefix(scheme)
            && !rest.is_empty()
            && !rest.starts_with('/')
        {
            return format!("{scheme}{}", dir.join(rest).display());
        }
    }
    image.to_string()
}

/// Metadata from text; `path` names it in errors. Warnings are dropped.
pub fn parse_metadata(path: &Path, text: &str) -> Result<Vec<FunctionMeta>, InputError> {
    metadata_of(Table::parse(path, text)?).map(|(meta, _)| meta)
}

/// The functions, and warnings about columns not read.
pub fn metadata_of(t: Table) -> Result<(Vec<FunctionMeta>, Vec<String>), InputError> {
    let (n, c, w, m) =
        (t.column("func_name")?, t.column("cold_dur_ms")?, t.column("warm_dur_ms")?, t.column("mem_mb")?);
    let (cs, ws, wi) =
        (t.column("cold_samples_ms").ok(), t.column("warm_samples_ms").ok(), t.column("warm_idle_ms").ok());
    let (pw, img, iat) = (t.column("prewarms").ok(), t.column("image_name").ok(), t.column("mean_iat").ok());
    let ignored: Vec<String> = t
        .header
        .iter()
        .filter(|h| !UNDERSTOOD.contains(&h.as_str()))
        .map(|h| match not_read(h) {
            Some(why) => format!("{h} ({why})"),
            None => h.clone(),
        })
        .collect();
    let mut warnings = Vec::new();
    if !ignored.is_empty() {
        warnings.push(format!(
            "column(s) not understood, ignored: {} (read: {})",
            ignored.join(", "),
            UNDERSTOOD.join(", ")
        ));
    }
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
        let given = |col: Option<usize>| col.map(|c| row[c].trim()).filter(|v| !v.is_empty());
        let prewarms = match given(pw) {
            None => None,
            Some(v) => match v.parse::<u32>() {
                Ok(p) if p <= MAX_PREWARMS => Some(p),
                _ => {
                    let why = format!("prewarms of {name:?} must be a whole number from 0 to {MAX_PREWARMS}: {v:?}");
                    return Err(t.error(*line, why));
                }
            },
        };
        let mean_iat_ms = match given(iat) {
            None => None,
            Some(v) => match v.parse::<f64>() {
                Ok(x) if x.is_finite() && x > 0.0 => Some(x),
                _ => return Err(t.error(*line, format!("mean_iat of {name:?} must be a number of ms above 0: {v:?}"))),
            },
        };
        let image_name = match given(img) {
            None => None,
            Some(v) if v.len() > 4096 || v.chars().any(char::is_control) => {
                let why = format!("image_name of {name:?} must be at most 4096 characters, none a control character");
                return Err(t.error(*line, why));
            }
            Some(v) => Some(v.to_string()),
        };
        out.push(FunctionMeta {
            cold_samples_ms: samples(cs)?,
            warm_samples_ms,
            warm_idle_ms,
            name,
            cold_dur_ms: cold,
            warm_dur_ms: warm,
            mem_mb: mem.ceil() as u64,
            prewarms,
            image_name,
            mean_iat_ms,
        });
    }
    if out.is_empty() {
        return Err(t.error(0, "no function is listed"));
    }
    Ok((out, warnings))
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

/// Writes metadata; the sample columns only if some function has samples, and `prewarms`,
/// `image_name`, `mean_iat` only if some function has one.
pub fn write_metadata(path: &Path, meta: &[FunctionMeta]) -> std::io::Result<()> {
    let samples = meta.iter().any(|f| !f.cold_samples_ms.is_empty() || !f.warm_samples_ms.is_empty());
    let prewarms = meta.iter().any(|f| f.prewarms.is_some());
    let images = meta.iter().any(|f| f.image_name.is_some());
    let iat = meta.iter().any(|f| f.mean_iat_ms.is_some());
    let mut s = String::from("func_name,cold_dur_ms,warm_dur_ms,mem_mb");
    for (on, cols) in [
        (samples, ",cold_samples_ms,warm_samples_ms,warm_idle_ms"),
        (prewarms, ",prewarms"),
        (images, ",image_name"),
        (iat, ",mean_iat"),
    ] {
        if on {
            s.push_str(cols);
        }
    }
    s.push('\n');
    let list = |xs: &[f64]| xs.iter().map(|x| num(*x)).collect::<Vec<_>>().join(" ");
    for f in meta {
        let mut fields = vec![f.name.clone(), num(f.cold_dur_ms), num(f.warm_dur_ms), f.mem_mb.to_string()];
        if samples {
            fields.extend([list(&f.cold_samples_ms), list(&f.warm_samples_ms), list(&f.warm_idle_ms)]);
        }
        if prewarms {
            fields.push(f.prewarms.map(|p| p.to_string()).unwrap_or_default());
        }
        if images {
            fields.push(f.image_name.clone().unwrap_or_default());
        }
        if iat {
            fields.push(f.mean_iat_ms.map(num).unwrap_or_default());
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

    fn parse(text: &str) -> Result<(Vec<FunctionMeta>, Vec<String>), InputError> {
        metadata_of(Table::parse(Path::new("m.csv"), text).unwrap())
    }

    /// The reference platform's basic-trace metadata, as it ships.
    const REFERENCE: &str = "func_name,cold_dur_ms,warm_dur_ms,mem_mb,image_name,compute,isolation,prewarms\n\
        a,5000,500,512,docker.io/x/float_operation:latest,CPU,CONTAINERD,1\n\
        b,5000,500,512,docker.io/x/gzip_compression:latest,CPU,CONTAINERD,2\n";

    #[test]
    fn reference_columns_are_read_and_the_others_named() {
        let (meta, warnings) = parse(REFERENCE).unwrap();
        assert_eq!((meta[0].prewarms, meta[1].prewarms), (Some(1), Some(2)));
        assert_eq!(meta[1].image_name.as_deref(), Some("docker.io/x/gzip_compression:latest"));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("column(s) not understood, ignored: compute (only CPU"), "{warnings:?}");
        assert!(warnings[0].contains("isolation (live functions run on --isolation's backend)"), "{warnings:?}");
        let (meta, warnings) =
            parse("func_name,cold_dur_ms,warm_dur_ms,mem_mb,mean_iat,prewarms\nf,100,10,64,25.5,\n").unwrap();
        assert_eq!((meta[0].mean_iat_ms, meta[0].prewarms, warnings.len()), (Some(25.5), None, 0));
        let (_, warnings) = parse("func_name,cold_dur_ms,warm_dur_ms,mem_mb,colour\nf,1,1,1,red\n").unwrap();
        assert!(warnings[0].contains("ignored: colour (read: func_name,"), "{warnings:?}");
        // Round trip through write_metadata.
        let (meta, _) = parse(REFERENCE).unwrap();
        let p = tmp("ref.csv", "");
        write_metadata(&p, &meta).unwrap();
        assert_eq!(read_metadata(&p).unwrap(), meta);
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn hostile_metadata_values_are_refused_by_line() {
        let head = "func_name,cold_dur_ms,warm_dur_ms,mem_mb,prewarms,mean_iat,image_name\n";
        for (row, want) in [
            ("f,1,1,1,1001,,", "prewarms of \"f\" must be a whole number from 0 to 1000: \"1001\""),
            ("f,1,1,1,-1,,", "prewarms of \"f\" must be a whole number"),
            ("f,1,1,1,1.5,,", "prewarms of \"f\" must be a whole number"),
            ("f,1,1,1,,0,", "mean_iat of \"f\" must be a number of ms above 0: \"0\""),
            ("f,1,1,1,,NaN,", "mean_iat of \"f\" must be a number of ms above 0"),
            ("f,1,1,1,,,\"code:/a\u{7}b\"", "image_name of \"f\" must be at most 4096 characters"),
        ] {
            let e = parse(&format!("{head}{row}\n")).unwrap_err();
            assert_eq!(e.line, 2, "{row}: {e}");
            assert!(e.reason.starts_with(want), "{row}: {e}");
        }
    }

    #[test]
    fn relative_local_images_are_taken_from_the_metadata_folder() {
        let dir = Path::new("/data/exp");
        assert_eq!(relative_to("code:fns/hello?X=1", dir), "code:/data/exp/fns/hello?X=1");
        assert_eq!(relative_to("oci-archive:img.tar:v1", dir), "oci-archive:/data/exp/img.tar:v1");
        assert_eq!(relative_to("oci:/abs/layout", dir), "oci:/abs/layout");
        assert_eq!(relative_to("docker.io/x/y:latest", dir), "docker.io/x/y:latest");
    }
}
