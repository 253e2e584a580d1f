//! Hostile and well-formed images built here, in memory, applied to a real directory.

use super::*;
use iluvatar_core::env::ManualClock;
use sha2::{Digest, Sha256};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[test]
fn references_parse_with_and_without_tags() {
    let r = ImageRef::parse("oci:/images/py:v1").unwrap().unwrap();
    assert_eq!((r.archive, r.path.as_path(), r.tag.as_deref()), (false, Path::new("/images/py"), Some("v1")));
    let r = ImageRef::parse("oci-archive:/images/py.tar").unwrap().unwrap();
    assert_eq!((r.archive, r.tag), (true, None));
    assert!(ImageRef::parse("oci:relative/path").unwrap().is_err());
    assert!(ImageRef::parse("code:/x").is_none());
}

/// A directory of its own for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("iluvatar-image-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One tar entry, its path written as is (the tar crate's builder refuses `..`).
enum E<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str, u32),
    Link(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Char(&'a str),
    /// A header claiming `size` bytes, followed by none (the stream ends).
    Claims(&'a str, u64),
}

fn header(path: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    let name = &mut h.as_old_mut().name;
    name[..path.len()].copy_from_slice(path.as_bytes());
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

fn layer(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            E::File(p, data, mode) => {
                b.append(&header(p, tar::EntryType::Regular, data.len() as u64, *mode), *data).unwrap()
            }
            E::Dir(p, mode) => b.append(&header(p, tar::EntryType::Directory, 0, *mode), &[][..]).unwrap(),
            E::Link(p, target) | E::Hard(p, target) => {
                let kind = if matches!(e, E::Link(..)) { tar::EntryType::Symlink } else { tar::EntryType::Link };
                let mut h = header(p, kind, 0, 0o777);
                h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            E::Char(p) => b.append(&header(p, tar::EntryType::Char, 0, 0o666), &[][..]).unwrap(),
            E::Claims(p, size) => {
                b.get_mut().extend_from_slice(header(p, tar::EntryType::Regular, *size, 0o644).as_bytes());
                b.get_mut().extend_from_slice(&[0; 512]);
            }
        }
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(bytes).unwrap();
    z.finish().unwrap()
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn put_blob(layout: &Path, bytes: &[u8]) -> String {
    let d = digest(bytes);
    std::fs::write(layout.join("blobs/sha256").join(&d[7..]), bytes).unwrap();
    d
}

/// Writes an OCI layout of `layers` at `layout`; returns the manifest's digest.
fn write_layout(layout: &Path, layers: &[Vec<u8>]) -> String {
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let config = serde_json::json!({"config": {"Entrypoint": ["/bin/true"]}}).to_string();
    let config = put_blob(layout, config.as_bytes());
    let layers: Vec<Value> = layers.iter().map(|l| serde_json::json!({"digest": put_blob(layout, l)})).collect();
    let manifest = serde_json::json!({"schemaVersion": 2, "config": {"digest": config}, "layers": layers});
    let manifest = put_blob(layout, manifest.to_string().as_bytes());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"digest": manifest}]});
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    manifest
}

struct Fixture {
    dir: Scratch,
    store: ImageStore,
    clock: Arc<ManualClock>,
}

impl Fixture {
    fn new(limits: ImageLimits) -> Self {
        let dir = Scratch::new("store");
        let clock = Arc::new(ManualClock::default());
        let store = ImageStore::new(dir.0.join("images"), limits, clock.clone()).unwrap();
        // Something outside every root that no image may touch.
        std::fs::create_dir_all(dir.0.join("canary")).unwrap();
        std::fs::write(dir.0.join("canary/secret"), "intact").unwrap();
        Fixture { dir, store, clock }
    }

    fn layout(&self, name: &str, layers: &[Vec<u8>]) -> (ImageRef, String) {
        let path = self.dir.0.join("layouts").join(name);
        let d = write_layout(&path, layers);
        (ImageRef { archive: false, path, tag: None }, d)
    }

    fn prepare(&self, name: &str, layers: &[Vec<u8>]) -> Result<Image, String> {
        let (r, _) = self.layout(name, layers);
        self.store.prepare(&r, Some(name))
    }

    fn canary(&self) -> PathBuf {
        self.dir.0.join("canary")
    }

    fn assert_canary(&self) {
        assert_eq!(std::fs::read_to_string(self.canary().join("secret")).unwrap(), "intact");
        let names: Vec<_> = std::fs::read_dir(self.canary()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    /// How far up from a root the file system's root is, as `../` repeated.
    fn up(&self) -> String {
        "../".repeat(self.dir.0.components().count() + 8)
    }
}

#[track_caller]
fn err_of(r: Result<Image, String>) -> String {
    r.expect_err("the image should be refused")
}

#[test]
fn entries_with_dotdot_or_absolute_paths_are_refused() {
    let f = Fixture::new(ImageLimits::default());
    let target = format!("{}{}", f.up(), f.canary().join("secret").display().to_string().trim_start_matches('/'));
    let e = err_of(f.prepare("dotdot", &[layer(&[E::File(&target, b"pwned", 0o644)])]));
    assert!(e.contains("has a '..' component (refused)") && e.contains("canary/secret"), "{e}");
    let abs = f.canary().join("secret").display().to_string();
    let e = err_of(f.prepare("abs", &[layer(&[E::File(&abs, b"pwned", 0o644)])]));
    assert!(e.contains("is an absolute path (refused)"), "{e}");
    let wh = format!("{}{}", f.up(), f.canary().join(".wh.secret").display().to_string().trim_start_matches('/'));
    let e = err_of(f.prepare("whiteout", &[layer(&[E::File(&wh, b"", 0o644)])]));
    assert!(e.contains("has a '..' component"), "{e}");
    let e = err_of(f.prepare("hard", &[layer(&[E::Hard("x", &target)])]));
    assert!(e.contains("hard link target") && e.contains("'..'"), "{e}");
    f.assert_canary();
    // Nothing half-made is left behind.
    let left: Vec<_> = std::fs::read_dir(f.dir.0.join("images")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn nothing_is_written_or_removed_through_a_link_from_an_earlier_layer() {
    let f = Fixture::new(ImageLimits::default());
    let canary = f.canary().display().to_string();
    let base = layer(&[E::Link("x", &canary), E::Link("root", "/")]);
    let e = err_of(f.prepare("wh", &[base.clone(), layer(&[E::File("x/.wh.secret", b"", 0o644)])]));
    assert!(e.contains("goes through x (a symbolic link)"), "{e}");
    let e = err_of(f.prepare("write", &[base.clone(), layer(&[E::File("x/new", b"pwned", 0o644)])]));
    assert!(e.contains("goes through x (a symbolic link)"), "{e}");
    let e = err_of(f.prepare("opq", &[base.clone(), layer(&[E::File("x/.wh..wh..opq", b"", 0o644)])]));
    assert!(e.contains("goes through x"), "{e}");
    let e = err_of(f.prepare("hard", &[base.clone(), layer(&[E::Hard("h", "x/secret")])]));
    assert!(e.contains("goes through x"), "{e}");
    // `root -> /`, then a whiteout under it (aimed at the canary: a broken check costs only it).
    let wh = format!("root{}/.wh.secret", f.canary().display());
    let e = err_of(f.prepare("root", &[base.clone(), layer(&[E::File(&wh, b"", 0o644)])]));
    assert!(e.contains("goes through root (a symbolic link)"), "{e}");
    // The same layer: a link, then an entry under it.
    let e = err_of(f.prepare("same", &[layer(&[E::Link("y", &canary), E::File("y/new", b"pwned", 0o644)])]));
    assert!(e.contains("goes through y"), "{e}");
    f.assert_canary();
    assert!(Path::new("/etc/passwd").exists());
    // A link replaced by an entry of the same name is just replaced.
    let img = f.prepare("replace", &[base, layer(&[E::File("x", b"now a file", 0o644)])]).unwrap();
    assert_eq!(std::fs::read_to_string(img.rootfs.join("x")).unwrap(), "now a file");
    assert_eq!(std::fs::read_link(img.rootfs.join("root")).unwrap(), Path::new("/"), "a link is data");
    f.assert_canary();
}

#[test]
fn whiteouts_and_opaque_directories_hide_only_lower_layers() {
    let f = Fixture::new(ImageLimits::default());
    let lower = layer(&[
        E::Dir("data", 0o755),
        E::Dir("data/old", 0o755),
        E::File("data/old/one", b"1", 0o644),
        E::File("data/keep", b"k", 0o644),
        E::Dir("data/sub", 0o755),
        E::File("data/sub/lower", b"l", 0o644),
        E::File("gone", b"g", 0o644),
        E::File("stays", b"s", 0o644),
    ]);
    let upper = layer(&[
        E::File("data/new", b"n", 0o644),
        E::File("data/sub/upper", b"u", 0o644),
        E::File("data/.wh..wh..opq", b"", 0o644),
        E::File("data/after", b"a", 0o644),
        E::File(".wh.gone", b"", 0o644),
        E::File(".wh..wh.plnk", b"", 0o644),
    ]);
    let img = f.prepare("opaque", &[lower, upper]).unwrap();
    let r = &img.rootfs;
    let mut data: Vec<_> =
        std::fs::read_dir(r.join("data")).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect();
    data.sort();
    assert_eq!(data, ["after", "new", "sub"]);
    let sub: Vec<_> = std::fs::read_dir(r.join("data/sub")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(sub, ["upper"], "the lower layer's data/sub/lower is hidden too");
    assert!(!r.join("gone").exists() && r.join("stays").exists());
    assert!(!r.join(".wh.gone").exists() && !r.join("data/.wh..wh..opq").exists());
    assert_eq!(img.args, ["/bin/true"]);
}

#[test]
fn setuid_and_setgid_bits_are_dropped_and_devices_not_created() {
    let f = Fixture::new(ImageLimits::default());
    let img = f
        .prepare(
            "suid",
            &[layer(&[
                E::File("suid", b"#!", 0o4755),
                E::File("sgid", b"#!", 0o2755),
                E::Dir("shared", 0o3777),
                E::Char("zero"),
                E::Hard("suid2", "suid"),
            ])],
        )
        .unwrap();
    let mode = |p: &str| std::fs::symlink_metadata(img.rootfs.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!((mode("suid"), mode("sgid"), mode("shared"), mode("suid2")), (0o755, 0o755, 0o1777, 0o755));
    assert!(std::fs::symlink_metadata(img.rootfs.join("zero")).is_err(), "no device node");
    let ino = |p: &str| std::fs::metadata(img.rootfs.join(p)).unwrap().ino();
    assert_eq!(ino("suid"), ino("suid2"), "a hard link inside the root is made");
    // The store is 0711.
    let m = std::fs::metadata(f.dir.0.join("images")).unwrap().permissions().mode() & 0o777;
    assert_eq!(m, 0o711, "the store: not listable by others, passable for user-namespaced containers");
}

#[test]
fn blobs_must_match_their_digests_and_the_cache_is_keyed_by_verified_ones() {
    let f = Fixture::new(ImageLimits::default());
    let (good, good_digest) = f.layout("good", &[layer(&[E::File("who", b"good", 0o644)])]);
    let img = f.store.prepare(&good, Some("c1")).unwrap();
    assert!(img.rootfs.ends_with(format!("sha256-{}/rootfs", &good_digest[7..])));

    // A tampered layer (same size, one byte changed).
    let (evil, _) = f.layout("tampered", &[layer(&[E::File("who", b"evil", 0o644)])]);
    let blobs = evil.path.join("blobs/sha256");
    let index: Value = serde_json::from_slice(&std::fs::read(evil.path.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: Value = serde_json::from_slice(&std::fs::read(blobs.join(&m[7..])).unwrap()).unwrap();
    let l = manifest["layers"][0]["digest"].as_str().unwrap();
    let mut bytes = std::fs::read(blobs.join(&l[7..])).unwrap();
    let at = bytes.windows(4).position(|w| w == b"evil").unwrap();
    bytes[at] = b'E';
    std::fs::write(blobs.join(&l[7..]), &bytes).unwrap();
    let e = f.store.prepare(&evil, Some("c2")).unwrap_err();
    assert!(e.contains(&format!("layer {l} does not match its digest")), "{e}");

    // An image claiming the good image's manifest digest for a manifest of its own.
    let (claim, claimed) = f.layout("claim", &[layer(&[E::File("who", b"evil", 0o644)])]);
    let blobs = claim.path.join("blobs/sha256");
    std::fs::rename(blobs.join(&claimed[7..]), blobs.join(&good_digest[7..])).unwrap();
    let index = serde_json::json!({"manifests": [{"digest": good_digest}]});
    std::fs::write(claim.path.join("index.json"), index.to_string()).unwrap();
    let e = f.store.prepare(&claim, Some("c3")).unwrap_err();
    assert!(e.contains(&format!("manifest {good_digest} does not match its digest")), "{e}");
    assert_eq!(std::fs::read_to_string(img.rootfs.join("who")).unwrap(), "good");

    // Malformed and foreign digests.
    let index = serde_json::json!({"manifests": [{"digest": "sha256:../../etc"}]});
    std::fs::write(claim.path.join("index.json"), index.to_string()).unwrap();
    assert!(f.store.prepare(&claim, Some("c4")).unwrap_err().contains("malformed digest"));
    let index = serde_json::json!({"manifests": [{"digest": "md5:abc"}]});
    std::fs::write(claim.path.join("index.json"), index.to_string()).unwrap();
    assert!(f.store.prepare(&claim, Some("c4")).unwrap_err().contains("unsupported digest"));
}

#[test]
fn blobs_and_index_that_are_links_devices_or_fifos_are_refused_at_once() {
    let f = Fixture::new(ImageLimits::default());
    let (r, m) = f.layout("zero", &[layer(&[E::File("a", b"a", 0o644)])]);
    let blob = r.path.join("blobs/sha256").join(&m[7..]);
    std::fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &blob).unwrap();
    let e = f.store.prepare(&r, Some("c")).unwrap_err();
    assert!(e.contains("is a symbolic link, not a regular file (refused)"), "{e}");
    // A FIFO itself (not through a link): refused without blocking.
    std::fs::remove_file(&blob).unwrap();
    nix::unistd::mkfifo(&blob, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let e = f.store.prepare(&r, Some("c")).unwrap_err();
    assert!(e.contains("is a FIFO, not a regular file (refused)"), "{e}");
    // index.json linked to /dev/zero: refused at registration too.
    std::fs::remove_file(r.path.join("index.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", r.path.join("index.json")).unwrap();
    let e = r.check().unwrap_err();
    assert!(e.contains("index.json is a symbolic link"), "{e}");
    assert!(f.store.prepare(&r, Some("c")).unwrap_err().contains("index.json is a symbolic link"));
    let missing = ImageRef { archive: true, path: PathBuf::from("/nonexistent.tar"), tag: None };
    assert_eq!(missing.check().unwrap_err(), "image archive /nonexistent.tar does not exist");
    let archive = ImageRef { archive: true, path: PathBuf::from("/dev/zero"), tag: None };
    assert!(archive.check().unwrap_err().contains("is a device, not a regular file"));
    assert!(f.store.prepare(&archive, Some("c")).unwrap_err().contains("is a device, not a regular file"));
}

#[test]
fn layers_images_and_entries_are_capped() {
    let limits = ImageLimits { max_layer_mb: 1, max_image_mb: 2, max_entries: 50, ..Default::default() };
    let f = Fixture::new(limits);
    // Refused on its header: nothing of it is read.
    let e = err_of(f.prepare("claims", &[layer(&[E::Claims("big", 5 << 30)])]));
    assert!(e.contains("takes the layer past the limit of 1 MiB (images.max_layer_mb)"), "{e}");
    // A gzip bomb: small compressed, over the cap once inflated.
    let bomb = gzip(&layer(&[E::File("a", &vec![0; 3 << 20], 0o644)]));
    assert!(bomb.len() < 1 << 20);
    let e = err_of(f.prepare("bomb", &[bomb]));
    assert!(e.contains("max_layer_mb"), "{e}");
    // A compressed layer over the cap is refused before it is read.
    let (r, _) = f.layout("sparse", &[layer(&[E::File("a", b"a", 0o644)])]);
    let index: Value = serde_json::from_slice(&std::fs::read(r.path.join("index.json")).unwrap()).unwrap();
    let blobs = r.path.join("blobs/sha256");
    let m = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: Value = serde_json::from_slice(&std::fs::read(blobs.join(&m[7..])).unwrap()).unwrap();
    let l = manifest["layers"][0]["digest"].as_str().unwrap();
    std::fs::File::options().write(true).open(blobs.join(&l[7..])).unwrap().set_len(3 << 20).unwrap();
    let e = f.store.prepare(&r, Some("c")).unwrap_err();
    assert!(e.contains(&format!("layer {l} is {} bytes, more than the limit of 1 MiB", 3 << 20)), "{e}");
    // The image: three layers under the layer cap, over the image's.
    let part = layer(&[E::File("a", &vec![1; 900 << 10], 0o644)]);
    let e = err_of(f.prepare("image", &[part.clone(), part.clone(), part]));
    assert!(e.contains("images.max_image_mb"), "{e}");
    // Entries.
    let names: Vec<String> = (0..60).map(|i| format!("f{i}")).collect();
    let many: Vec<E<'_>> = names.iter().map(|n| E::File(n, b"", 0o644)).collect();
    let e = err_of(f.prepare("many", &[layer(&many)]));
    assert!(e.contains("more than 50 entries (images.max_entries)"), "{e}");
    f.assert_canary();
}

/// A clock that moves a second each time it is read.
struct Racing(ManualClock);

impl Clock for Racing {
    fn now(&self) -> Duration {
        self.0.advance(Duration::from_secs(1));
        self.0.now()
    }
    fn unix_time_us(&self) -> u64 {
        0
    }
}

#[test]
fn an_unpack_that_takes_too_long_is_stopped() {
    let dir = Scratch::new("slow");
    let limits = ImageLimits { unpack_timeout_ms: 20_000, ..Default::default() };
    let store = ImageStore::new(dir.0.join("images"), limits, Arc::new(Racing(ManualClock::default()))).unwrap();
    let names: Vec<String> = (0..100).map(|i| format!("f{i}")).collect();
    let many: Vec<E<'_>> = names.iter().map(|n| E::File(n, b"x", 0o644)).collect();
    let path = dir.0.join("layout");
    write_layout(&path, &[layer(&many)]);
    let e = store.prepare(&ImageRef { archive: false, path, tag: None }, Some("c")).unwrap_err();
    assert!(e.contains("took longer than 20000 ms (images.unpack_timeout_ms)"), "{e}");
    assert!(!dir.0.join("images/.tmp-").exists());
}

#[test]
fn archives_are_extracted_safely() {
    let f = Fixture::new(ImageLimits::default());
    let (r, _) = f.layout("src", &[gzip(&layer(&[E::File("hello", b"hi", 0o644)]))]);
    // An archive of the layout, plus a hostile entry.
    let tar_of = |extra: &[E<'_>]| {
        let mut b = tar::Builder::new(Vec::new());
        b.append_dir_all(".", &r.path).unwrap();
        let mut bytes = b.into_inner().unwrap();
        bytes.truncate(bytes.len() - 1024);
        let mut extra = layer(extra);
        extra.truncate(extra.len() - 1024);
        bytes.extend(extra);
        bytes.extend([0; 1024]);
        bytes
    };
    let archive = |name: &str, bytes: Vec<u8>| {
        let p = f.dir.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        ImageRef { archive: true, path: p, tag: None }
    };
    let good = archive("good.tar", tar_of(&[E::File("manifest.json", b"[]", 0o644)]));
    let img = f.store.prepare(&good, Some("c1")).unwrap();
    assert_eq!(std::fs::read_to_string(img.rootfs.join("hello")).unwrap(), "hi");

    let target = format!("{}{}", f.up(), f.canary().join("secret").display().to_string().trim_start_matches('/'));
    let e = f.store.prepare(&archive("dotdot.tar", tar_of(&[E::File(&target, b"x", 0o644)])), Some("c")).unwrap_err();
    assert!(e.contains("archive entry") && e.contains("'..' component (refused)"), "{e}");
    let abs = f.canary().join("secret").display().to_string();
    let e = f.store.prepare(&archive("abs.tar", tar_of(&[E::File(&abs, b"x", 0o644)])), Some("c")).unwrap_err();
    assert!(e.contains("is an absolute path (refused)"), "{e}");
    let e = f
        .store
        .prepare(&archive("link.tar", tar_of(&[E::Link("blobs/sha256/x", "/dev/zero")])), Some("c"))
        .unwrap_err();
    assert!(e.contains("blobs/sha256/x") && e.contains("Symlink entry"), "{e}");
    let e =
        f.store.prepare(&archive("twice.tar", tar_of(&[E::File("index.json", b"{}", 0o644)])), Some("c")).unwrap_err();
    assert!(e.contains("index.json\" appears twice (refused)"), "{e}");
    f.assert_canary();
    // The archive itself through a link.
    let link = f.dir.0.join("link-to-good.tar");
    std::os::unix::fs::symlink(&good.path, &link).unwrap();
    let e = f.store.prepare(&ImageRef { archive: true, path: link, tag: None }, Some("c")).unwrap_err();
    assert!(e.contains("is a symbolic link, not a regular file"), "{e}");
}

#[test]
fn roots_are_removed_once_unused() {
    let f = Fixture::new(ImageLimits::default());
    let path = f.dir.0.join("layouts/changing");
    let first = write_layout(&path, &[layer(&[E::File("v", b"1", 0o644)])]);
    let r = ImageRef { archive: false, path: path.clone(), tag: None };
    let one = f.store.prepare(&r, Some("c1")).unwrap();
    assert_eq!(f.store.prepare(&r, Some("c2")).unwrap().rootfs, one.rootfs, "one root per digest");
    // The image changes: the old root stays while its containers run.
    std::fs::remove_dir_all(&path).unwrap();
    let second = write_layout(&path, &[layer(&[E::File("v", b"2", 0o644)])]);
    assert_ne!(first, second);
    let two = f.store.prepare(&r, Some("c3")).unwrap();
    assert_eq!(std::fs::read_to_string(two.rootfs.join("v")).unwrap(), "2");
    f.store.release("c1");
    assert!(one.rootfs.exists(), "c2 still runs from it");
    f.store.release("c2");
    assert!(!one.rootfs.exists(), "unused: removed");
    f.store.release("c3");
    assert!(two.rootfs.exists(), "the reference still resolves to it");
    // A new store (a restart) starts empty.
    drop(ImageStore::new(f.dir.0.join("images"), ImageLimits::default(), f.clock.clone()).unwrap());
    assert!(!two.rootfs.exists());
}

#[test]
fn a_nested_index_is_followed_and_verified() {
    let f = Fixture::new(ImageLimits::default());
    let (r, manifest) = f.layout("nested", &[layer(&[E::File("n", b"nested", 0o644)])]);
    let arch = std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64");
    let nested = serde_json::json!({"manifests": [
        {"digest": manifest, "platform": {"architecture": arch, "os": "linux"}}
    ]});
    let nested = nested.to_string();
    let nested_digest = put_blob(&r.path, nested.as_bytes());
    let index = serde_json::json!({"manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": nested_digest}
    ]});
    std::fs::write(r.path.join("index.json"), index.to_string()).unwrap();
    let img = f.store.prepare(&r, Some("c1")).unwrap();
    assert_eq!(std::fs::read_to_string(img.rootfs.join("n")).unwrap(), "nested");
    // The nested index changed under its digest: refused.
    let evil = nested.replace("linux", "LINUX");
    std::fs::write(r.path.join("blobs/sha256").join(&nested_digest[7..]), evil).unwrap();
    let e = f.store.prepare(&r, Some("c2")).unwrap_err();
    assert!(e.contains(&format!("image index {nested_digest} does not match its digest")), "{e}");
}
