//! Which Debian package provides a program, and whether the set-up scripts install it.
//!
//! A program counts as installed by the scripts when its package is in the install list, or
//! is pulled in by one (Depends / Pre-Depends / Recommends, followed through the packages
//! installed here), or is part of every Debian system (Essential, or Priority `required`). Read from
//! dpkg's own database (`/var/lib/dpkg/status`, `/var/lib/dpkg/info/*.list`): no apt lists,
//! no network, no process.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The installed packages and the files they own.
#[derive(Debug, Default)]
pub struct Packages {
    /// Installed package → (the names of its dependencies: each clause's alternatives).
    depends: HashMap<String, Vec<Vec<String>>>,
    /// Installed packages that every Debian system has.
    base: BTreeSet<String>,
    /// Virtual package → installed packages that provide it.
    provides: HashMap<String, Vec<String>>,
    /// File → the package that owns it.
    owner: HashMap<PathBuf, String>,
}

/// What a program the command ran is, to the guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Built or written by the build or the tests themselves.
    Ours,
    /// The Rust toolchain (rustup): the README's prerequisite.
    Toolchain,
    /// From a package the set-up scripts install (or that every system has).
    Installed { package: String },
    /// From a package the set-up scripts do not install: a fresh machine lacks it.
    NotInstalled { package: String },
    /// From no Debian package at all (installed by hand, or by another tool).
    NoPackage,
    /// Not on the host at that path: run in another mount namespace, a container (its
    /// image's programs) or a kubelet lab node's view (its /opt/cni/bin). The project's
    /// scripts make both: weft's and the lab's images, the plugins the DaemonSet installs
    /// and the reference plugins the lab copies from an installed package.
    ElsewhereOnly,
}

impl Packages {
    /// This machine's dpkg database.
    pub fn load() -> io::Result<Packages> {
        Packages::load_from(Path::new("/var/lib/dpkg"))
    }

    pub fn load_from(dpkg: &Path) -> io::Result<Packages> {
        let status = fs::read_to_string(dpkg.join("status"))?;
        let mut p = Packages::parse_status(&status);
        for entry in fs::read_dir(dpkg.join("info"))? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(pkg) = name.strip_suffix(".list") else {
                continue;
            };
            let pkg = pkg.split(':').next().unwrap_or(pkg);
            if !p.depends.contains_key(pkg) {
                continue;
            }
            for line in fs::read_to_string(&path)?.lines() {
                p.owner.insert(PathBuf::from(line), pkg.to_owned());
            }
        }
        Ok(p)
    }

    /// Parses dpkg's status file; only installed packages are kept.
    pub fn parse_status(text: &str) -> Packages {
        let mut p = Packages::default();
        for para in text.split("\n\n") {
            let fields = fields(para);
            let Some(name) = fields.get("Package") else {
                continue;
            };
            if !fields
                .get("Status")
                .is_some_and(|s| s.ends_with(" installed"))
            {
                continue;
            }
            let mut deps = Vec::new();
            // Recommends too: the scripts' `apt-get install` installs them (apt's default),
            // so a fresh machine has them as surely as the Depends (clang brings
            // libclang-rt-14-dev that way, and with it libc6-i386, whose loader `ldd` runs).
            for key in ["Pre-Depends", "Depends", "Recommends"] {
                if let Some(v) = fields.get(key) {
                    deps.extend(clauses(v));
                }
            }
            p.depends.entry(name.clone()).or_default().extend(deps);
            if fields.get("Essential").is_some_and(|v| v == "yes")
                || fields.get("Priority").is_some_and(|v| v == "required")
            {
                p.base.insert(name.clone());
            }
            if let Some(v) = fields.get("Provides") {
                for clause in clauses(v) {
                    for virt in clause {
                        p.provides.entry(virt).or_default().push(name.clone());
                    }
                }
            }
        }
        p
    }

    /// Registers one file of one package (tests build databases by hand).
    pub fn own(&mut self, path: &str, package: &str) {
        self.owner.insert(PathBuf::from(path), package.to_owned());
    }

    /// The package that owns `path`, looked up also under its resolved name and its other
    /// name on a merged-/usr system (`/usr/sbin/ip` is recorded by dpkg as `/sbin/ip`).
    pub fn owner_of(&self, path: &Path) -> Option<&str> {
        let mut names = vec![path.to_path_buf()];
        if let Ok(real) = fs::canonicalize(path) {
            names.push(real);
        }
        let with_usr_variants: Vec<PathBuf> = names
            .iter()
            .flat_map(|n| {
                let s = n.to_string_lossy();
                let other = match s.strip_prefix("/usr") {
                    Some(rest) if is_merged(rest) => Some(PathBuf::from(rest)),
                    _ if is_merged(&s) => Some(PathBuf::from(format!("/usr{s}"))),
                    _ => None,
                };
                std::iter::once(n.clone()).chain(other)
            })
            .collect();
        with_usr_variants
            .iter()
            .find_map(|n| self.owner.get(n).map(String::as_str))
    }

    /// Every package that installing `list` on a fresh Debian system leaves installed,
    /// as far as this machine's packages tell.
    pub fn closure<'a>(&self, list: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut queue: VecDeque<String> = self.base.iter().cloned().collect();
        queue.extend(list.into_iter().map(str::to_owned));
        while let Some(pkg) = queue.pop_front() {
            if !seen.insert(pkg.clone()) {
                continue;
            }
            for clause in self.depends.get(&pkg).into_iter().flatten() {
                // apt takes the first alternative that can be had; here, the first one
                // that is installed (by name, or through a package that provides it).
                if let Some(dep) = clause.iter().find_map(|alt| self.installed_as(alt)) {
                    queue.push_back(dep);
                }
            }
        }
        seen
    }

    fn installed_as(&self, name: &str) -> Option<String> {
        if self.depends.contains_key(name) {
            return Some(name.to_owned());
        }
        self.provides.get(name).and_then(|v| v.first().cloned())
    }
}

/// The rules that place a program: where our own files and the toolchain live.
#[derive(Debug, Clone, Default)]
pub struct Places {
    /// Directories whose programs the build or the tests made (target dir, temp dirs).
    pub ours: Vec<PathBuf>,
    /// Directories of the Rust toolchain (CARGO_HOME, RUSTUP_HOME).
    pub toolchain: Vec<PathBuf>,
}

/// Judges one program the command ran.
pub fn judge(
    path: &Path,
    places: &Places,
    packages: &Packages,
    installed: &BTreeSet<String>,
) -> Verdict {
    if places.ours.iter().any(|d| path.starts_with(d)) {
        return Verdict::Ours;
    }
    if places.toolchain.iter().any(|d| path.starts_with(d)) {
        return Verdict::Toolchain;
    }
    match packages.owner_of(path) {
        Some(p) if installed.contains(p) => Verdict::Installed {
            package: p.to_owned(),
        },
        Some(p) => Verdict::NotInstalled {
            package: p.to_owned(),
        },
        // symlink_metadata: a dangling link on the host is still a host program's path.
        None if fs::symlink_metadata(path).is_err() => Verdict::ElsewhereOnly,
        None => Verdict::NoPackage,
    }
}

/// The verdicts on a set of programs, and the lines a person reads for the bad ones.
pub fn report(
    programs: &BTreeSet<PathBuf>,
    places: &Places,
    packages: &Packages,
    list: &[String],
) -> (BTreeMap<PathBuf, Verdict>, Vec<String>) {
    let installed = packages.closure(list.iter().map(String::as_str));
    let mut verdicts = BTreeMap::new();
    let mut problems = Vec::new();
    for path in programs {
        let v = judge(path, places, packages, &installed);
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        match &v {
            Verdict::NotInstalled { package } => problems.push(format!(
                "`{name}` ({}) was run, from the Debian package `{package}`, which the set-up \
                 scripts do not install: add `{package}` to WEFT_APT_PACKAGES in \
                 scripts/lib/deps.sh",
                path.display()
            )),
            Verdict::NoPackage => problems.push(format!(
                "`{name}` ({}) was run, and no Debian package provides it (installed by \
                 hand?): a fresh machine lacks it; run a program from a package the set-up \
                 scripts install",
                path.display()
            )),
            _ => {}
        }
        verdicts.insert(path.clone(), v);
    }
    (verdicts, problems)
}

fn is_merged(path: &str) -> bool {
    ["/bin/", "/sbin/", "/lib/", "/lib64/"]
        .iter()
        .any(|d| path.starts_with(d))
}

/// A control-file paragraph's fields, continuation lines joined.
fn fields(para: &str) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = HashMap::new();
    let mut last: Option<String> = None;
    for line in para.lines() {
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(k) = &last
                && let Some(v) = out.get_mut(k)
            {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            out.insert(k.to_owned(), v.trim().to_owned());
            last = Some(k.to_owned());
        }
    }
    out
}

/// `a (>= 1) | b:any, c` → [[a, b], [c]].
fn clauses(value: &str) -> Vec<Vec<String>> {
    value
        .split(',')
        .map(|clause| {
            clause
                .split('|')
                .filter_map(|alt| {
                    let name = alt.split_whitespace().next()?;
                    Some(name.split(':').next().unwrap_or(name).to_owned())
                })
                .collect::<Vec<_>>()
        })
        .filter(|c| !c.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: coreutils
Status: install ok installed
Priority: required
Essential: yes
Pre-Depends: libc6 (>= 2.34)

Package: libc6
Status: install ok installed
Priority: optional
Multi-Arch: same

Package: etcd-server
Status: install ok installed
Priority: optional
Depends: adduser, libc6 (>= 2.34)
Recommends: etcd-docs, not-installed-here

Package: etcd-docs
Status: install ok installed
Priority: optional

Package: etcd-client
Status: install ok installed
Priority: optional
Depends: libc6

Package: adduser
Status: install ok installed
Priority: important
Depends: passwd,
 debconf | debconf-2.0

Package: cdebconf
Status: install ok installed
Provides: debconf-2.0

Package: passwd
Status: install ok installed

Package: removed
Status: deinstall ok config-files
Priority: required
";

    fn db() -> Packages {
        let mut p = Packages::parse_status(STATUS);
        p.own("/bin/ls", "coreutils");
        p.own("/usr/bin/etcd", "etcd-server");
        p.own("/usr/bin/etcdctl", "etcd-client");
        p.own("/usr/sbin/adduser", "adduser");
        p
    }

    #[test]
    fn closure_follows_dependencies_recommends_alternatives_and_virtual_packages() {
        let c = db().closure(["etcd-server"]);
        let want = [
            "adduser",
            "cdebconf",
            "coreutils",
            "etcd-docs",
            "etcd-server",
            "libc6",
            "passwd",
        ];
        assert_eq!(c, want.iter().map(|s| s.to_string()).collect());
        // A package removed but for its config files is not installed, nor base.
        assert!(!db().closure([]).contains("removed"));
    }

    #[test]
    fn a_program_from_a_package_outside_the_list_is_named_with_its_package() {
        let p = db();
        let programs: BTreeSet<PathBuf> = ["/usr/bin/etcd", "/usr/bin/etcdctl", "/usr/bin/ls"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let (v, problems) = report(
            &programs,
            &Places::default(),
            &p,
            &["etcd-server".to_string()],
        );
        assert_eq!(
            v[Path::new("/usr/bin/etcd")],
            Verdict::Installed {
                package: "etcd-server".into()
            }
        );
        // merged /usr: dpkg knows /bin/ls, the kernel ran /usr/bin/ls.
        assert_eq!(
            v[Path::new("/usr/bin/ls")],
            Verdict::Installed {
                package: "coreutils".into()
            }
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("`etcdctl`"), "{}", problems[0]);
        assert!(problems[0].contains("`etcd-client`"), "{}", problems[0]);
    }

    #[test]
    fn ours_toolchain_and_unpackaged_programs() {
        let p = db();
        let places = Places {
            ours: vec![PathBuf::from("/work/target")],
            toolchain: vec![PathBuf::from("/root/.rustup")],
        };
        let installed = p.closure([]);
        let j = |s: &str| judge(Path::new(s), &places, &p, &installed);
        assert_eq!(j("/work/target/debug/weftd"), Verdict::Ours);
        assert_eq!(
            j("/root/.rustup/toolchains/x/bin/cargo"),
            Verdict::Toolchain
        );
        // On the host and in no package: installed by hand.
        let dir = std::env::temp_dir().join(format!("weft-judge-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let by_hand = dir.join("kubectl");
        fs::write(&by_hand, b"").unwrap();
        assert_eq!(judge(&by_hand, &places, &p, &installed), Verdict::NoPackage);
        fs::remove_dir_all(&dir).unwrap();
        // Not on the host at all: a container's or a lab node's program.
        assert_eq!(j("/weft-no-such-dir/pause"), Verdict::ElsewhereOnly);
        assert_eq!(
            j("/usr/sbin/adduser"),
            Verdict::NotInstalled {
                package: "adduser".into()
            }
        );
    }
}
