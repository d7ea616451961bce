//! The plan the kernel holds, kept on disk so a restarted agent can put it back: a whole
//! plan (`policy-plan.json`) plus a journal of the changes committed since
//! (`policy-plan.journal`). A change costs one appended line instead of rewriting the whole
//! plan with an fsync (15 ms at 10,000 rules); the journal is folded into a new whole plan
//! when it grows (in the background, [`Persisted::tend`]), and whenever the table is
//! replaced or diffed whole (at once, [`Persisted::write_whole`]).
//!
//! Positions: every state the files can describe has a number. The plan file holds the
//! state at its `seq`; the journal's first line (`{"from": n}`) names the state its first
//! entry applies to, and entry `i` takes state `n + i` to `n + i + 1`. A restart replays the
//! entries past the plan file's `seq`. A whole plan that no journal leads to (a replace, a
//! diff) takes a number past every entry ever written, so an older journal left beside it
//! replays nothing.
//!
//! Crash safety: both are written *before* the commit they describe, so together they are
//! never behind the kernel, whatever instant the agent dies at:
//! - a whole write renames the new plan file into place, then starts its journal: a crash
//!   between the two leaves an older journal, whose entries all lie before the new `seq`;
//! - a background fold writes the plan of state `s` to a temp file while the loop keeps
//!   appending to the current journal (which still starts at or before `s`); then, on the
//!   loop, the temp file is renamed over the plan file (the journal, unchanged, still leads
//!   from `s` to the last commit) and a journal starting at `s` with the entries written
//!   since replaces the old one (renamed into place). At every step the plan file plus the
//!   journal's entries past it are the last committed plan;
//! - a torn last line (a crash while appending, before the commit) is ignored.
//!
//! Appends are not fsynced: the files guard against the agent dying, not the machine —
//! after a reboot the kernel table is gone with the pods it protected, and the agent
//! rebuilds from the datastore. A journal of the agent before positions (`{"base": n}`) is
//! replayed only onto plan file `n`, as that agent did.
//!
//! Must not: talk to the kernel or decide what to apply (that is the caller's).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use weft_policy::plan::{ClassInfo, Op, Plan};

use super::Error;
use crate::log;

/// Fold the journal into a new plan file beyond this many bytes, or beyond the size of the
/// plan file if that is larger: rewriting a 32 MB plan every 4 MB of journal would write
/// the plan eight times over for every plan's worth of changes.
const COMPACT_BYTES: u64 = 4 << 20;

#[derive(Deserialize)]
struct PlanFile {
    seq: u64,
    plan: Plan,
}

/// [`PlanFile`] as written (borrowing the plan: no copy of 10,000 rules to write it).
#[derive(Serialize)]
struct PlanFileRef<'a> {
    seq: u64,
    plan: &'a Plan,
}

#[derive(Serialize, Deserialize)]
struct Header {
    /// The state the first entry applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<u64>,
    /// Written by an agent from before positions: the entries continue plan file `base`
    /// and only it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    ops: Vec<Op>,
    /// The plan's class descriptions, when they changed with these ops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    classes: Option<BTreeMap<String, ClassInfo>>,
}

/// A fold of the journal into a new plan file, written by a thread of its own.
struct Fold {
    /// The state the new plan file holds.
    at: u64,
    /// Journal lines appended since (states `at + 1` …): the new journal's entries.
    since: Vec<String>,
    /// Where the thread writes the plan file (renamed into place on the loop).
    tmp: PathBuf,
    /// Writes the plan file; answers its size.
    thread: JoinHandle<Result<u64, Error>>,
}

/// The two files and what was last written to them.
pub struct Persisted {
    plan_path: PathBuf,
    journal_path: PathBuf,
    /// The state the files describe (the plan file's, plus the journal's entries).
    position: u64,
    journal_bytes: u64,
    /// The journal is folded once it outgrows this and [`COMPACT_BYTES`]: the plan file's
    /// size, or twice the journal's after a failed fold.
    plan_bytes: u64,
    /// The class descriptions as of the last write (an entry carries them only on change).
    classes: BTreeMap<String, ClassInfo>,
    /// Whether the files describe the plan last handed to the kernel.
    current: bool,
    /// The fold in progress.
    fold: Option<Fold>,
    /// [`COMPACT_BYTES`], lowered by tests.
    min_fold_bytes: u64,
}

impl Persisted {
    pub fn new(run_dir: &Path) -> Persisted {
        Persisted {
            plan_path: run_dir.join("policy-plan.json"),
            journal_path: run_dir.join("policy-plan.journal"),
            position: 0,
            journal_bytes: 0,
            plan_bytes: 0,
            classes: BTreeMap::new(),
            current: false,
            fold: None,
            min_fold_bytes: COMPACT_BYTES,
        }
    }

    pub fn plan_path(&self) -> &Path {
        &self.plan_path
    }

    /// Whether the files describe the plan last handed to the kernel.
    pub fn is_current(&self) -> bool {
        self.current
    }

    /// The kernel may not hold what the files say (a refused commit): the next write must
    /// be a whole plan.
    pub fn invalidate(&mut self) {
        self.current = false;
    }

    /// The persisted plan with its journal replayed; `Ok(None)` when there is none.
    pub fn load(&mut self) -> Result<Option<Plan>, Error> {
        // A fold the last agent did not finish: never renamed into place, so never read.
        let _ = std::fs::remove_file(self.fold_path());
        let text = match std::fs::read_to_string(&self.plan_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("reading", &self.plan_path)(e)),
        };
        self.plan_bytes = text.len() as u64;
        let (seq, mut plan) = match serde_json::from_str::<PlanFile>(&text) {
            Ok(f) => (Some(f.seq), f.plan),
            // Written by an agent from before the journal: a bare plan, no journal.
            Err(_) => match serde_json::from_str::<Plan>(&text) {
                Ok(p) => (None, p),
                Err(source) => {
                    return Err(Error::Parse {
                        path: self.plan_path.clone(),
                        source,
                    });
                }
            },
        };
        drop(text);
        self.position = seq.unwrap_or(0);
        if let Some(seq) = seq {
            self.position = self.replay(seq, &mut plan)?;
        }
        self.classes = plan.classes.clone();
        Ok(Some(plan))
    }

    /// Replays the journal's entries past state `seq` onto `plan`; the last state any of its
    /// entries reaches (at least `seq`), which the next write must go past.
    fn replay(&self, seq: u64, plan: &mut Plan) -> Result<u64, Error> {
        let text = match std::fs::read_to_string(&self.journal_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(seq),
            Err(e) => return Err(Error::io("reading", &self.journal_path)(e)),
        };
        let mut lines = text.split_inclusive('\n');
        let header = lines
            .next()
            .and_then(|l| serde_json::from_str::<Header>(l.trim_end()).ok());
        let from = match header {
            Some(Header { from: Some(n), .. }) => n,
            Some(Header { base: Some(n), .. }) if n == seq => n,
            // A journal of another plan file: nothing in it continues this one.
            _ => return Ok(seq),
        };
        // Only the last line can be torn, and it was never committed.
        let entries = lines.filter(|l| l.ends_with('\n'));
        let mut state = from;
        for line in entries {
            state += 1;
            if state <= seq {
                continue; // already in the plan file
            }
            let entry: Entry =
                serde_json::from_str(line.trim_end()).map_err(|source| Error::Parse {
                    path: self.journal_path.clone(),
                    source,
                })?;
            plan.apply(&entry.ops).map_err(|source| Error::Journal {
                path: self.journal_path.clone(),
                source,
            })?;
            if let Some(classes) = entry.classes {
                plan.classes = classes;
            }
        }
        Ok(state.max(seq))
    }

    /// Records `ops`, which take the persisted plan to `plan`: one journal line, or a whole
    /// plan file when the files are not current.
    pub fn record(&mut self, ops: &[Op], plan: &Plan) -> Result<(), Error> {
        if !self.current {
            return self.write_whole(plan);
        }
        let entry = Entry {
            ops: ops.to_vec(),
            classes: (plan.classes != self.classes).then(|| plan.classes.clone()),
        };
        let mut line = json_line(&entry, &self.journal_path)?;
        line.push('\n');
        let appended = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.journal_path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = appended {
            self.current = false;
            return Err(Error::io("appending to", &self.journal_path)(e));
        }
        self.position += 1;
        self.journal_bytes += line.len() as u64;
        if entry.classes.is_some() {
            self.classes = plan.classes.clone();
        }
        if let Some(fold) = &mut self.fold {
            fold.since.push(line);
        }
        Ok(())
    }

    /// After a commit, off its path: puts a finished fold in place, and starts one when the
    /// journal has grown past [`COMPACT_BYTES`] (or the plan file's size). `plan` is the
    /// plan the files describe. The fold writes a copy of it on a thread of its own, so the
    /// loop pays for the copy, not for encoding and writing tens of megabytes.
    pub fn tend(&mut self, plan: &Plan) {
        if self.fold.as_ref().is_some_and(|f| f.thread.is_finished())
            && let Some(fold) = self.fold.take()
        {
            self.finish(fold);
        }
        if self.fold.is_some()
            || !self.current
            || self.journal_bytes <= self.min_fold_bytes.max(self.plan_bytes)
        {
            return;
        }
        let at = self.position;
        let tmp = self.fold_path();
        let copied = std::time::Instant::now();
        let snapshot = plan.clone();
        log::info(
            "policy plan journal folding in the background",
            &[
                ("journalBytes", self.journal_bytes.into()),
                ("copyMs", super::ms(copied).into()),
            ],
        );
        let (path, dest) = (tmp.clone(), self.plan_path.clone());
        let spawned = std::thread::Builder::new()
            .name("weftd-plan-fold".into())
            .spawn(move || write_plan_file(&path, &dest, at, &snapshot));
        match spawned {
            Ok(thread) => {
                self.fold = Some(Fold {
                    at,
                    since: Vec::new(),
                    tmp,
                    thread,
                })
            }
            // The journal keeps growing; tried again after the next commit.
            Err(e) => log::warn(
                "policy plan journal not folded: no thread",
                &[("error", e.to_string().into())],
            ),
        }
    }

    /// Waits for a fold in progress and puts it in place (or drops it): a whole write must
    /// not race it for the plan file.
    fn settle(&mut self) {
        if let Some(fold) = self.fold.take() {
            self.finish(fold);
        }
    }

    /// A fold's thread is done (or is waited for): its plan file replaces the old one, then
    /// a journal holding only the entries written since replaces the old journal.
    fn finish(&mut self, fold: Fold) {
        let written = match fold.thread.join() {
            Ok(r) => r,
            Err(_) => Err(Error::io("writing", &fold.tmp)(std::io::Error::other(
                "the fold's thread panicked",
            ))),
        };
        let installed = written.and_then(|bytes| {
            if !self.current {
                // A whole write came first (or the files are about to be rewritten): the
                // fold's plan is older than what the files hold.
                return Ok(None);
            }
            std::fs::rename(&fold.tmp, &self.plan_path)
                .map_err(Error::io("renaming into place", &self.plan_path))?;
            let mut journal = format!(
                "{}\n",
                json_line(
                    &Header {
                        from: Some(fold.at),
                        base: None
                    },
                    &self.journal_path
                )?
            );
            for line in &fold.since {
                journal.push_str(line);
            }
            // Until this rename the old journal, which starts before `at`, continues the
            // new plan file; after it, the new one does.
            let tmp = self.journal_tmp_path();
            std::fs::write(&tmp, &journal)
                .and_then(|()| std::fs::rename(&tmp, &self.journal_path))
                .map_err(Error::io("writing", &self.journal_path))?;
            Ok(Some((bytes, journal.len() as u64)))
        });
        match installed {
            Ok(Some((plan_bytes, journal_bytes))) => {
                self.plan_bytes = plan_bytes;
                self.journal_bytes = journal_bytes;
            }
            Ok(None) => {
                let _ = std::fs::remove_file(&fold.tmp);
            }
            Err(e) => {
                // The old plan file and journal still describe the plan: only the fold is
                // lost. The next is tried once the journal has grown by as much again.
                let _ = std::fs::remove_file(&fold.tmp);
                self.plan_bytes = self.plan_bytes.max(self.journal_bytes.saturating_mul(2));
                log::warn(
                    "policy plan journal not folded",
                    &[("error", e.to_string().into())],
                );
            }
        }
    }

    /// A new state past every entry written: the whole plan (fsynced, renamed into place),
    /// then an empty journal that continues it.
    pub fn write_whole(&mut self, plan: &Plan) -> Result<(), Error> {
        self.current = false;
        self.settle();
        let seq = self.position + 1;
        // Streamed to the file: the JSON of a large plan is tens of MB (32 MB for 760k
        // elements), which would otherwise be held whole on top of the plan itself.
        let mut encoding = None;
        crate::files::write_atomically_with(&self.plan_path, |w| {
            serde_json::to_writer(w, &PlanFileRef { seq, plan }).map_err(|e| {
                if e.is_io() {
                    std::io::Error::from(e)
                } else {
                    encoding = Some(e);
                    std::io::Error::other("the plan cannot be encoded")
                }
            })
        })
        .map_err(|e| match encoding.take() {
            Some(source) => Error::Encode {
                path: self.plan_path.clone(),
                source,
            },
            None => Error::io("writing", &self.plan_path)(e),
        })?;
        self.position = seq;
        self.plan_bytes = std::fs::metadata(&self.plan_path)
            .map(|m| m.len())
            .unwrap_or(0);
        let header = format!(
            "{}\n",
            json_line(
                &Header {
                    from: Some(seq),
                    base: None
                },
                &self.journal_path
            )?
        );
        std::fs::write(&self.journal_path, &header)
            .map_err(Error::io("writing", &self.journal_path))?;
        self.journal_bytes = header.len() as u64;
        self.classes = plan.classes.clone();
        self.current = true;
        Ok(())
    }

    fn fold_path(&self) -> PathBuf {
        self.plan_path.with_file_name(".policy-plan.json.fold")
    }

    fn journal_tmp_path(&self) -> PathBuf {
        self.journal_path.with_file_name(".policy-plan.journal.tmp")
    }
}

/// The fold's thread: plan file `seq` of `plan` at `tmp` (encoded straight to the file,
/// fsynced), for the loop to rename over `dest`; its size.
fn write_plan_file(tmp: &Path, dest: &Path, seq: u64, plan: &Plan) -> Result<u64, Error> {
    let file = std::fs::File::create(tmp).map_err(Error::io("writing", tmp))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    serde_json::to_writer(&mut out, &PlanFileRef { seq, plan }).map_err(|source| {
        Error::Encode {
            path: dest.to_path_buf(),
            source,
        }
    })?;
    let file = out
        .into_inner()
        .map_err(|e| Error::io("writing", tmp)(e.into_error()))?;
    file.sync_all().map_err(Error::io("writing", tmp))?;
    let bytes = file.metadata().map_err(Error::io("writing", tmp))?.len();
    Ok(bytes)
}

/// `v` as one line of JSON for `path`.
fn json_line<T: Serialize>(v: &T, path: &Path) -> Result<String, Error> {
    serde_json::to_string(v).map_err(|source| Error::Encode {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_policy::plan::{Elem, KeyType, Role, Set};

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("weft-persist-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn plan_with(addrs: &[&str]) -> Plan {
        let mut p = Plan::empty("t");
        let mut set = Set::new(KeyType::Ipv4, false, false, Role::Known);
        for a in addrs {
            set.elements.insert(Elem::addr(a.parse().unwrap()), None);
        }
        p.sets.insert("known4".into(), set);
        p
    }

    fn add(a: &str) -> Op {
        Op::AddElements {
            set: "known4".into(),
            elements: vec![(Elem::addr(a.parse().unwrap()), None)],
        }
    }

    #[test]
    fn whole_plan_then_journal_lines_replay_to_the_last_plan() {
        let d = dir("replay");
        let mut p = Persisted::new(&d);
        assert_eq!(p.load().unwrap(), None);
        p.write_whole(&plan_with(&["10.0.0.2"])).unwrap();
        p.record(&[add("10.0.0.3")], &plan_with(&["10.0.0.2", "10.0.0.3"]))
            .unwrap();
        let mut last = plan_with(&["10.0.0.2", "10.0.0.3", "10.0.0.4"]);
        last.classes.insert(
            "ci_x".into(),
            ClassInfo {
                direction: weft_policy::Direction::Ingress,
                policies: vec![],
            },
        );
        p.record(&[add("10.0.0.4")], &last).unwrap();
        assert_eq!(Persisted::new(&d).load().unwrap(), Some(last.clone()));

        // A torn last line (the agent died while appending, before the commit) is not
        // replayed.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(d.join("policy-plan.journal"))
            .unwrap();
        f.write_all(br#"{"ops":[{"AddElements":{"set":"kno"#)
            .unwrap();
        assert_eq!(Persisted::new(&d).load().unwrap(), Some(last.clone()));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_journal_of_an_older_generation_is_ignored() {
        let d = dir("stale");
        let mut p = Persisted::new(&d);
        p.write_whole(&plan_with(&["10.0.0.2"])).unwrap();
        p.record(&[add("10.0.0.3")], &plan_with(&["10.0.0.2", "10.0.0.3"]))
            .unwrap();
        let journal = std::fs::read(d.join("policy-plan.journal")).unwrap();
        // The next generation's plan file is in place, but the agent died before it
        // started the new journal: the old journal must not be replayed onto it.
        let newer = plan_with(&["10.0.0.2", "10.0.0.3", "10.0.0.9"]);
        p.write_whole(&newer).unwrap();
        std::fs::write(d.join("policy-plan.journal"), journal).unwrap();
        assert_eq!(Persisted::new(&d).load().unwrap(), Some(newer));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_bare_plan_from_an_older_agent_still_loads() {
        let d = dir("bare");
        let p = plan_with(&["10.0.0.2"]);
        std::fs::write(
            d.join("policy-plan.json"),
            serde_json::to_string(&p).unwrap(),
        )
        .unwrap();
        let mut persisted = Persisted::new(&d);
        assert_eq!(persisted.load().unwrap(), Some(p.clone()));
        // Not current until written whole: the next change cannot be a journal line.
        assert!(!persisted.is_current());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn ops_that_do_not_apply_make_the_files_unreadable() {
        let d = dir("bad");
        let mut p = Persisted::new(&d);
        p.write_whole(&plan_with(&["10.0.0.2"])).unwrap();
        let bad = Op::DeleteElements {
            set: "missing".into(),
            elements: vec![Elem::addr("10.0.0.2".parse().unwrap())],
        };
        p.record(&[bad], &plan_with(&["10.0.0.2"])).unwrap();
        let err = Persisted::new(&d).load().unwrap_err();
        assert!(
            matches!(&err, Error::Journal { path, .. } if path.ends_with("policy-plan.journal")),
            "{err}"
        );
        assert!(err.to_string().contains("does not apply"), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Waits for the fold's thread (the loop would find it finished after a later commit).
    fn fold_written(p: &Persisted) {
        let started = std::time::Instant::now();
        while !p
            .fold
            .as_ref()
            .expect("a fold started")
            .thread
            .is_finished()
        {
            assert!(started.elapsed() < std::time::Duration::from_secs(10));
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    fn copy_dir(from: &Path, to: &Path) {
        let _ = std::fs::remove_dir_all(to);
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }

    #[test]
    fn a_background_fold_leaves_the_last_plan_on_disk_at_every_step() {
        let d = dir("fold");
        let mut p = Persisted::new(&d);
        p.min_fold_bytes = 0;
        p.write_whole(&plan_with(&["10.0.0.2"])).unwrap();
        let two = plan_with(&["10.0.0.2", "10.0.0.3"]);
        p.record(&[add("10.0.0.3")], &two).unwrap();
        p.plan_bytes = 0; // due now, whatever the sizes
        p.tend(&two);
        fold_written(&p);
        // Committed while the fold was being written: in the old journal, and kept for
        // the new one.
        let three = plan_with(&["10.0.0.2", "10.0.0.3", "10.0.0.4"]);
        p.record(&[add("10.0.0.4")], &three).unwrap();
        // Restarts are tried on copies: a load removes an unfinished fold, as a restarted
        // agent would.
        let crashed = d.with_file_name(format!("{}-crashed", d.display()));
        copy_dir(&d, &crashed);
        assert_eq!(
            Persisted::new(&crashed).load().unwrap(),
            Some(three.clone())
        );
        assert!(!crashed.join(".policy-plan.json.fold").exists());
        copy_dir(&d, &crashed);

        // The agent dies after the fold's plan file was renamed into place, before the new
        // journal: the old journal still leads from it to the last commit.
        std::fs::rename(
            crashed.join(".policy-plan.json.fold"),
            crashed.join("policy-plan.json"),
        )
        .unwrap();
        assert_eq!(
            Persisted::new(&crashed).load().unwrap(),
            Some(three.clone())
        );
        std::fs::remove_dir_all(&crashed).unwrap();

        // Put in place after the next commit: a plan file of state 2 (two), a journal
        // holding only what came after it.
        p.min_fold_bytes = COMPACT_BYTES;
        p.tend(&three);
        assert!(p.fold.is_none());
        assert!(!d.join(".policy-plan.json.fold").exists());
        let journal = std::fs::read_to_string(d.join("policy-plan.journal")).unwrap();
        assert_eq!(journal.lines().count(), 2, "{journal}");
        assert!(journal.starts_with(r#"{"from":2}"#), "{journal}");
        assert_eq!(Persisted::new(&d).load().unwrap(), Some(three.clone()));
        let four = plan_with(&["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]);
        p.record(&[add("10.0.0.5")], &four).unwrap();
        assert_eq!(Persisted::new(&d).load().unwrap(), Some(four));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_whole_write_during_a_fold_wins_over_it() {
        let d = dir("fold-whole");
        let mut p = Persisted::new(&d);
        p.min_fold_bytes = 0;
        p.write_whole(&plan_with(&["10.0.0.2"])).unwrap();
        let two = plan_with(&["10.0.0.2", "10.0.0.3"]);
        p.record(&[add("10.0.0.3")], &two).unwrap();
        p.plan_bytes = 0;
        p.tend(&two);
        let replaced = plan_with(&["10.0.0.9"]);
        p.write_whole(&replaced).unwrap();
        assert!(p.fold.is_none());
        assert!(!d.join(".policy-plan.json.fold").exists());
        assert_eq!(Persisted::new(&d).load().unwrap(), Some(replaced));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_journal_of_the_agent_before_positions_continues_only_its_own_plan_file() {
        let d = dir("generations");
        let line = |ops: &[Op]| {
            format!(
                "{}\n",
                serde_json::to_string(&Entry {
                    ops: ops.to_vec(),
                    classes: None
                })
                .unwrap()
            )
        };
        let write = |seq: u64, base: u64| {
            std::fs::write(
                d.join("policy-plan.json"),
                serde_json::to_string(&PlanFileRef {
                    seq,
                    plan: &plan_with(&["10.0.0.2"]),
                })
                .unwrap(),
            )
            .unwrap();
            std::fs::write(
                d.join("policy-plan.journal"),
                format!("{{\"base\":{base}}}\n{}", line(&[add("10.0.0.3")])),
            )
            .unwrap();
        };
        write(5, 5);
        let mut p = Persisted::new(&d);
        assert_eq!(
            p.load().unwrap(),
            Some(plan_with(&["10.0.0.2", "10.0.0.3"]))
        );
        // The next whole plan goes past every state the old journal reached.
        p.write_whole(&plan_with(&["10.0.0.7"])).unwrap();
        assert_eq!(p.position, 7);
        // A generation's journal beside a newer plan file (the old agent died between the
        // two writes): not replayed.
        write(5, 4);
        assert_eq!(
            Persisted::new(&d).load().unwrap(),
            Some(plan_with(&["10.0.0.2"]))
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
