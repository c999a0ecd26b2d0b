//! Finding Erlang and building the embedded modules: `erl`/`erlc` on PATH, the compiled modules cached per installation in a private directory.

use std::path::PathBuf;

use parking_lot::Mutex;

/// The Erlang sources, compiled into the agent so it runs from anywhere.
pub const SOURCES: [(&str, &str); 4] = [
    (
        "cwbench_beam.erl",
        include_str!("../../../runtimes/beam/cwbench_beam.erl"),
    ),
    (
        "cwbench_beam_sup.erl",
        include_str!("../../../runtimes/beam/cwbench_beam_sup.erl"),
    ),
    (
        "cwbench_beam_worker.erl",
        include_str!("../../../runtimes/beam/cwbench_beam_worker.erl"),
    ),
    (
        "cwbench_beam_ws.erl",
        include_str!("../../../runtimes/beam/cwbench_beam_ws.erl"),
    ),
];

/// What to tell a user whose machine has no Erlang.
pub const INSTALL_HINT: &str =
    "install Erlang/OTP to run runtime = \"beam\" (Debian/Ubuntu: apt-get install erlang-nox)";

/// None when the BEAM can run here; otherwise why not and how to fix it.
pub fn unavailable_reason() -> Option<String> {
    for tool in ["erl", "erlc"] {
        if find_in_path(tool).is_none() {
            return Some(format!("`{tool}` is not in PATH: {INSTALL_HINT}"));
        }
    }
    None
}

pub(crate) fn find_in_path(tool: &str) -> Option<PathBuf> {
    find_in(&std::env::var_os("PATH")?, tool)
}

pub(crate) fn find_in(path: &std::ffi::OsStr, tool: &str) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The compiled modules: built once per version of the sources, Erlang
/// installation and user in `$TMPDIR/cwbench-beam-<uid>-<hash>` (private to
/// the user), or, if that cannot be trusted, once per agent process and
/// version in a directory of its own. Only success is remembered: a failed
/// `erlc` (a full disk, say) is retried by the next run, and an Erlang
/// upgraded under a running agent is noticed.
pub(crate) fn compiled_dir() -> Result<PathBuf, String> {
    static OWN: Mutex<Option<(u64, PathBuf)>> = Mutex::new(None);
    // FNV-1a over the sources and the Erlang installation: new sources or
    // another (upgraded, downgraded) OTP, new directory — a .beam file
    // from a newer compiler may not load in an older VM.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, text) in SOURCES {
        for b in name.bytes().chain(text.bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    for b in installation_id().bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let uid = std::fs::metadata("/proc/self").ok().map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    let shared = uid.map(|u| {
        (
            u,
            std::env::temp_dir().join(format!("cwbench-beam-{u}-{h:016x}")),
        )
    });
    if let Some((u, cache)) = &shared
        && trusted(cache, *u)
    {
        return Ok(cache.clone());
    }
    let mut own = OWN.lock();
    if let Some((oh, dir)) = own.as_ref()
        && *oh == h
        && uid.is_none_or(|u| trusted(dir, u))
    {
        return Ok(dir.clone());
    }
    let fresh = compile()?;
    if let Some((u, cache)) = &shared {
        if std::fs::rename(&fresh, cache).is_ok() && trusted(cache, *u) {
            return Ok(cache.clone());
        }
        // Another agent won the race (use its copy if sound) or the name
        // is taken by someone else: keep ours.
        if trusted(cache, *u) {
            let _ = std::fs::remove_dir_all(&fresh);
            return Ok(cache.clone());
        }
    }
    *own = Some((h, fresh.clone()));
    Ok(fresh)
}

/// Where `erl` and `erlc` resolve to, with their size and modification
/// time: changes when Erlang is installed, upgraded or switched (e.g. by a
/// version manager), without starting a VM to ask.
pub(crate) fn installation_id() -> String {
    std::env::var_os("PATH").map_or_else(String::new, |p| installation_id_in(&p))
}

pub(crate) fn installation_id_in(path: &std::ffi::OsStr) -> String {
    let mut id = String::new();
    for tool in ["erl", "erlc"] {
        let Some(p) = find_in(path, tool) else {
            continue;
        };
        let real = std::fs::canonicalize(&p).unwrap_or(p);
        id.push_str(&real.to_string_lossy());
        if let Ok(m) = std::fs::metadata(&real) {
            use std::os::unix::fs::MetadataExt;
            id.push_str(&format!(":{}:{}.{};", m.len(), m.mtime(), m.mtime_nsec()));
        }
    }
    id
}

/// A directory of compiled modules we may load: ours, private, complete.
pub(crate) fn trusted(dir: &std::path::Path, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::symlink_metadata(dir) else {
        return false;
    };
    m.is_dir()
        && m.uid() == uid
        && m.mode() & 0o077 == 0
        && SOURCES.iter().all(|(name, _)| {
            std::fs::symlink_metadata(dir.join(name.replace(".erl", ".beam")))
                .is_ok_and(|f| f.is_file() && f.uid() == uid)
        })
}

pub(crate) fn compile() -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("cwbench-beam-{}-{nanos:x}", std::process::id()));
    // Fails if it exists: nobody can plant modules for us to load.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for (name, text) in SOURCES {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        files.push(p);
    }
    let out = std::process::Command::new("erlc")
        .arg("-o")
        .arg(&dir)
        .args(&files)
        .output()
        .map_err(|e| format!("cannot run erlc: {e}; {INSTALL_HINT}"))?;
    if !out.status.success() {
        return Err(format!(
            "erlc failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(dir)
}
