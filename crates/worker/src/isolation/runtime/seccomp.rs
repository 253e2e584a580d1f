//! Seccomp filters for function containers. A profile is written in the OCI runtime-spec
//! format (`linux.seccomp` of config.json: `defaultAction`, `syscalls[{names, action,
//! errnoRet, args}]`), compiled to BPF in pure Rust (the `seccompiler` crate: libcontainer is
//! built without libseccomp) and installed by the container's init process as the last step
//! before it executes the function (a libcontainer executor), after its capabilities are
//! dropped and `no_new_privs` is set.
//!
//! The default profile allows by default and denies, with EPERM, the calls that reach the
//! kernel's soft spots or the host: namespace creation (`unshare`, `setns`, `clone` with any
//! namespace flag), mounting, keyrings, `bpf`, `perf_event_open`, `ptrace` and cross-process
//! memory, `userfaultfd`, `io_uring`, modules, kexec, reboot, clocks, swap, quotas, and a few
//! obsolete calls. `clone3` answers ENOSYS (its flags live in memory a filter cannot read;
//! libc falls back to `clone`, whose flags it can). A call of another architecture (i386
//! through `int 0x80`) kills the process and an x32 call (number bit 30) answers ENOSYS, so
//! neither can be used to reach a denied call under another number.

use seccompiler::{BpfProgram, SeccompAction, TargetArch};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// Denied with EPERM by the default profile, whatever their arguments.
pub const DENIED: &[&str] = &[
    // Namespaces, mounts and the root.
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "name_to_handle_at",
    "open_by_handle_at",
    // Kernel keyrings.
    "keyctl",
    "add_key",
    "request_key",
    // BPF, performance events, tracing other processes.
    "bpf",
    "perf_event_open",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    "userfaultfd",
    // io_uring.
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    // Modules, kexec, reboot.
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "query_module",
    "get_kernel_syms",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    // Host-wide state: clocks, swap, quotas, accounting, logs, devices' I/O ports.
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "swapon",
    "swapoff",
    "quotactl",
    "quotactl_fd",
    "acct",
    "syslog",
    "iopl",
    "ioperm",
    "vhangup",
    "lookup_dcookie",
    "nfsservctl",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "fanotify_init",
];

/// The namespace flags `clone` is denied with (any one of them).
const CLONE_NAMESPACE_FLAGS: [(&str, u64); 8] = [
    ("CLONE_NEWNS", 0x0002_0000),
    ("CLONE_NEWCGROUP", 0x0200_0000),
    ("CLONE_NEWUTS", 0x0400_0000),
    ("CLONE_NEWIPC", 0x0800_0000),
    ("CLONE_NEWUSER", 0x1000_0000),
    ("CLONE_NEWPID", 0x2000_0000),
    ("CLONE_NEWNET", 0x4000_0000),
    ("CLONE_NEWTIME", 0x0000_0080),
];

const EPERM: u64 = 1;
const ENOSYS: u64 = 38;

/// The default profile, in the OCI format.
pub fn default_profile() -> Value {
    let mut syscalls = vec![
        json!({"names": DENIED, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM}),
        json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}),
    ];
    for (_, flag) in CLONE_NAMESPACE_FLAGS {
        syscalls.push(json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": EPERM,
            "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}]
        }));
    }
    json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"], "syscalls": syscalls})
}

/// The profile a backend's `seccomp` setting names: `default`, `unconfined` (none), or the
/// path of a profile in the OCI format. The profile is compiled once here, so that a bad one
/// stops the worker at start, by name, rather than failing every cold start.
pub fn load(setting: &str) -> Result<Option<Value>, SeccompError> {
    let profile = match setting {
        "unconfined" => return Ok(None),
        "default" => default_profile(),
        path if Path::new(path).is_absolute() => {
            let path = path.to_string();
            let text = match std::fs::read(&path) {
                Ok(text) => text,
                Err(source) => return Err(SeccompError::Unreadable { path, source }),
            };
            let v: Value = match serde_json::from_slice(&text) {
                Ok(v) => v,
                Err(source) => return Err(SeccompError::NotJson { path, source }),
            };
            compile(&v).map_err(|why| SeccompError::Invalid { profile: format!("the seccomp profile {path}"), why })?;
            return Ok(Some(v));
        }
        other => return Err(SeccompError::Setting(other.to_string())),
    };
    compile(&profile).map_err(|why| SeccompError::Invalid { profile: "the default seccomp profile".into(), why })?;
    Ok(Some(profile))
}

/// Why a backend's `seccomp` setting cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp = {0:?}: expected \"default\", \"unconfined\" or the absolute path of a profile (OCI format)")]
    Setting(String),
    #[error("the seccomp profile {path} cannot be read: {source}")]
    Unreadable { path: String, source: std::io::Error },
    #[error("the seccomp profile {path} is not valid JSON: {source}")]
    NotJson { path: String, source: serde_json::Error },
    /// The profile does not compile; `why` names the rule (compiling also runs in the
    /// launcher process, which answers in text).
    #[error("{profile}: {why}")]
    Invalid { profile: String, why: String },
}

fn arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|e| format!("no seccomp support on this architecture: {e}"))
}

fn action(name: &str, errno: Option<u64>, default_errno: u64) -> Result<SeccompAction, String> {
    let data = |v: u64| u32::try_from(v).map_err(|_| format!("errnoRet {v} is out of range"));
    Ok(match name {
        "SCMP_ACT_ALLOW" => SeccompAction::Allow,
        "SCMP_ACT_ERRNO" => SeccompAction::Errno(data(errno.unwrap_or(default_errno))?),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => SeccompAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => SeccompAction::KillProcess,
        "SCMP_ACT_TRAP" => SeccompAction::Trap,
        "SCMP_ACT_LOG" => SeccompAction::Log,
        "SCMP_ACT_TRACE" => SeccompAction::Trace(data(errno.unwrap_or(0))?),
        other => return Err(format!("action {other:?} is not supported (SCMP_ACT_NOTIFY needs a listener)")),
    })
}

/// seccompiler's JSON spelling of an action.
fn action_json(a: &SeccompAction) -> Value {
    match a {
        SeccompAction::Allow => json!("allow"),
        SeccompAction::Errno(e) => json!({"errno": e}),
        SeccompAction::KillThread => json!("kill_thread"),
        SeccompAction::KillProcess => json!("kill_process"),
        SeccompAction::Log => json!("log"),
        SeccompAction::Trace(t) => json!({"trace": t}),
        SeccompAction::Trap => json!("trap"),
    }
}

/// One OCI argument condition in seccompiler's JSON spelling (64-bit compares, as libseccomp).
fn condition(c: &Value) -> Result<Value, String> {
    let index = c["index"].as_u64().filter(|i| *i < 6).ok_or("an argument condition needs an index from 0 to 5")?;
    let value = c["value"].as_u64().ok_or("an argument condition needs a value")?;
    let two = c["valueTwo"].as_u64().unwrap_or(0);
    let (op, val) = match c["op"].as_str().unwrap_or_default() {
        "SCMP_CMP_NE" => (json!("ne"), value),
        "SCMP_CMP_LT" => (json!("lt"), value),
        "SCMP_CMP_LE" => (json!("le"), value),
        "SCMP_CMP_EQ" => (json!("eq"), value),
        "SCMP_CMP_GE" => (json!("ge"), value),
        "SCMP_CMP_GT" => (json!("gt"), value),
        "SCMP_CMP_MASKED_EQ" => (json!({"masked_eq": value}), two),
        other => return Err(format!("argument operator {other:?} is unknown")),
    };
    Ok(json!({"index": index, "type": "qword", "op": op, "val": val}))
}

/// Whether seccompiler knows the call on this architecture (profiles name calls of other
/// architectures too; those are skipped, as runtimes do).
fn known(name: &str, arch: TargetArch) -> bool {
    let probe = json!({"p": {"mismatch_action": "allow", "match_action": "log", "filter": [{"syscall": name}]}});
    seccompiler::compile_from_json(probe.to_string().as_bytes(), arch).is_ok()
}

/// The rules of one action: per call, either unconditional (`None`) or a list of
/// alternative (OR) argument conditions, each a list of AND-ed conditions.
type Rules = BTreeMap<String, Option<Vec<Vec<Value>>>>;

fn add_rule(rules: &mut Rules, name: &str, conditions: Vec<Value>) {
    let slot = rules.entry(name.to_string()).or_insert_with(|| Some(Vec::new()));
    match (slot, conditions.is_empty()) {
        (slot, true) => *slot = None,
        (Some(alternatives), false) => alternatives.push(conditions),
        (None, false) => {} // Already unconditional.
    }
}

fn filter_json(rules: &Rules, on_match: &SeccompAction, otherwise: &SeccompAction) -> Value {
    let mut entries = Vec::new();
    for (name, alternatives) in rules {
        match alternatives {
            None => entries.push(json!({"syscall": name})),
            Some(alts) => entries.extend(alts.iter().map(|c| json!({"syscall": name, "args": c}))),
        }
    }
    json!({"f": {"mismatch_action": action_json(otherwise), "match_action": action_json(on_match), "filter": entries}})
}

/// Compiles an OCI profile into the filters to install, in order. A filter has one action on
/// a match and one otherwise, so a profile becomes one filter per action it uses (the kernel
/// applies the strictest answer of all installed filters), plus one for the default action.
pub fn compile(profile: &Value) -> Result<Vec<BpfProgram>, String> {
    let arch = arch()?;
    let default_errno = profile["defaultErrnoRet"].as_u64().unwrap_or(EPERM);
    let default =
        action(profile["defaultAction"].as_str().ok_or("the profile has no defaultAction")?, None, default_errno)?;
    // Keyed by the action's JSON spelling, so that equal actions share a filter.
    let mut by_action: BTreeMap<String, (SeccompAction, Rules)> = BTreeMap::new();
    let mut listed = Rules::new();
    for entry in profile["syscalls"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let act = action(
            entry["action"].as_str().ok_or("a syscalls entry has no action")?,
            entry["errnoRet"].as_u64(),
            default_errno,
        )?;
        if act == default {
            continue; // What the default does anyway.
        }
        let conditions: Vec<Value> = entry["args"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(condition)
            .collect::<Result<_, _>>()?;
        let names = entry["names"].as_array().ok_or("a syscalls entry has no names")?;
        for name in names {
            let name = name.as_str().ok_or("a syscall name is not a string")?;
            if !known(name, arch) {
                continue;
            }
            let (_, rules) =
                by_action.entry(action_json(&act).to_string()).or_insert_with(|| (act.clone(), Rules::new()));
            add_rule(rules, name, conditions.clone());
            add_rule(&mut listed, name, conditions.clone());
        }
    }
    let mut filters = Vec::new();
    #[cfg(target_arch = "x86_64")]
    filters.push(x32_guard());
    let mut docs = Vec::new();
    if default != SeccompAction::Allow {
        docs.push(filter_json(&listed, &SeccompAction::Allow, &default));
    }
    for (act, rules) in by_action.values() {
        if *act != SeccompAction::Allow {
            docs.push(filter_json(rules, act, &SeccompAction::Allow));
        }
    }
    if docs.is_empty() {
        // Allow everything: still refuse other architectures.
        docs.push(filter_json(&Rules::new(), &SeccompAction::Log, &SeccompAction::Allow));
    }
    for doc in docs {
        let mut map = seccompiler::compile_from_json(doc.to_string().as_bytes(), arch).map_err(|e| e.to_string())?;
        filters.push(map.remove("f").ok_or("the compiler returned no filter")?);
    }
    Ok(filters)
}

/// x32 calls are x86_64 calls with bit 30 set in their number: they would match none of the
/// rules above, so they answer ENOSYS.
#[cfg(target_arch = "x86_64")]
fn x32_guard() -> BpfProgram {
    use seccompiler::sock_filter;
    const LD_W_ABS: u16 = 0x20;
    const JGE_K: u16 = 0x35;
    const RET_K: u16 = 0x06;
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_ALLOW: u32 = 0x7fff_0000;
    let op = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        op(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        op(JGE_K, 0, 1, 0x4000_0000),
        op(RET_K, 0, 0, RET_ERRNO | ENOSYS as u32),
        op(RET_K, 0, 0, RET_ALLOW),
    ]
}

/// Installs the filters in this process (and its future children). Irreversible.
pub fn install(filters: &[BpfProgram]) -> Result<(), String> {
    for f in filters {
        seccompiler::apply_filter(f).map_err(|e| format!("installing the seccomp filter failed: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_profile_compiles_and_names_every_call_it_denies() {
        let arch = arch().unwrap();
        for name in DENIED.iter().chain(&["clone", "clone3"]) {
            assert!(known(name, arch), "{name} is unknown to the compiler: it would not be denied");
        }
        let filters = compile(&default_profile()).unwrap();
        // x32 guard, the EPERM filter and the ENOSYS filter.
        assert_eq!(filters.len(), 3);
        assert!(filters.iter().all(|f| !f.is_empty()));
    }

    #[test]
    fn profiles_are_checked_and_bad_ones_named() {
        assert_eq!(load("unconfined").unwrap(), None);
        assert!(load("default").unwrap().is_some());
        assert!(load("strict").unwrap_err().to_string().contains("expected \"default\""));
        assert!(load("/nonexistent/profile.json").unwrap_err().to_string().contains("cannot be read"));
        let bad = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_NOTIFY"}]});
        assert!(compile(&bad).unwrap_err().contains("SCMP_ACT_NOTIFY"));
        let bad = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 7, "value": 1, "op": "SCMP_CMP_EQ"}]}]});
        assert!(compile(&bad).unwrap_err().contains("index"));
        assert!(compile(&json!({"syscalls": []})).unwrap_err().contains("defaultAction"));
    }

    #[test]
    fn an_allowlist_profile_gets_a_default_filter_and_unknown_names_are_skipped() {
        let p = json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["read", "write", "no_such_call", "arm_fadvise64_64"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["getpid"], "action": "SCMP_ACT_KILL_PROCESS"}
        ]});
        let filters = compile(&p).unwrap();
        // x32 guard, the default filter, the kill filter (allow needs none of its own).
        assert_eq!(filters.len(), 3);
    }

    #[test]
    fn an_unconditional_rule_wins_over_conditional_ones_for_the_same_call() {
        let mut rules = Rules::new();
        add_rule(&mut rules, "clone", vec![json!({"index": 0})]);
        add_rule(&mut rules, "clone", vec![]);
        add_rule(&mut rules, "clone", vec![json!({"index": 1})]);
        assert_eq!(rules["clone"], None);
    }
}
