//! The plan the kernel holds, kept on disk so a restarted agent can put it back: a whole
//! plan (`policy-plan.json`) plus a journal of the changes committed since
//! (`policy-plan.journal`). A change costs one appended line instead of rewriting the whole
//! plan with an fsync (15 ms at 10,000 rules); the journal is folded into a new whole plan
//! when it grows, and whenever the table is replaced or diffed whole.
//!
//! Crash safety: both are written *before* the commit they describe, so together they are
//! never behind the kernel. The journal's first line names the generation of the plan file
//! it continues (`{"base": n}`; the plan file is `{"seq": n, "plan": …}`): a crash between
//! writing a new plan file and starting its journal leaves a journal that names an older
//! generation, which is then ignored. A torn last line (a crash while appending, before the
//! commit) is ignored too. Appends are not fsynced: the files guard against the agent
//! dying, not the machine — after a reboot the kernel table is gone with the pods it
//! protected, and the agent rebuilds from the datastore.
//!
//! Must not: talk to the kernel or decide what to apply (that is the caller's).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weft_policy::plan::{ClassInfo, Op, Plan};

use super::Error;

/// Fold the journal into a new plan file beyond this many bytes.
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
    base: u64,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    ops: Vec<Op>,
    /// The plan's class descriptions, when they changed with these ops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    classes: Option<BTreeMap<String, ClassInfo>>,
}

/// The two files and what was last written to them.
pub struct Persisted {
    plan_path: PathBuf,
    journal_path: PathBuf,
    /// The generation of the plan file on disk.
    seq: u64,
    journal_bytes: u64,
    /// The class descriptions as of the last write (an entry carries them only on change).
    classes: BTreeMap<String, ClassInfo>,
    /// Whether the files describe the plan last handed to the kernel.
    current: bool,
}

impl Persisted {
    pub fn new(run_dir: &Path) -> Persisted {
        Persisted {
            plan_path: run_dir.join("policy-plan.json"),
            journal_path: run_dir.join("policy-plan.journal"),
            seq: 0,
            journal_bytes: 0,
            classes: BTreeMap::new(),
            current: false,
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
        let text = match std::fs::read_to_string(&self.plan_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("reading", &self.plan_path)(e)),
        };
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
        self.seq = seq.unwrap_or(0);
        if let Some(seq) = seq {
            self.replay(seq, &mut plan)?;
        }
        self.classes = plan.classes.clone();
        Ok(Some(plan))
    }

    fn replay(&self, seq: u64, plan: &mut Plan) -> Result<(), Error> {
        let text = match std::fs::read_to_string(&self.journal_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("reading", &self.journal_path)(e)),
        };
        let mut lines = text.split_inclusive('\n');
        let header = lines
            .next()
            .and_then(|l| serde_json::from_str::<Header>(l.trim_end()).ok());
        if header.is_none_or(|h| h.base != seq) {
            return Ok(()); // a journal of an older plan file
        }
        for line in lines {
            // Only the last line can be torn, and it was never committed.
            if !line.ends_with('\n') {
                break;
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
        Ok(())
    }

    /// Records `ops`, which take the persisted plan to `plan`: one journal line, or a whole
    /// plan file when the files are not current or the journal is due for folding.
    pub fn record(&mut self, ops: &[Op], plan: &Plan) -> Result<(), Error> {
        if !self.current || self.journal_bytes > COMPACT_BYTES {
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
        self.journal_bytes += line.len() as u64;
        if entry.classes.is_some() {
            self.classes = plan.classes.clone();
        }
        Ok(())
    }

    /// A new generation: the whole plan (fsynced, renamed into place), then an empty journal
    /// that continues it.
    pub fn write_whole(&mut self, plan: &Plan) -> Result<(), Error> {
        self.current = false;
        let seq = self.seq + 1;
        let text = json_line(&PlanFileRef { seq, plan }, &self.plan_path)?;
        crate::files::write_atomically(&self.plan_path, &text)
            .map_err(Error::io("writing", &self.plan_path))?;
        self.seq = seq;
        let header = format!(
            "{}\n",
            json_line(&Header { base: seq }, &self.journal_path)?
        );
        std::fs::write(&self.journal_path, &header)
            .map_err(Error::io("writing", &self.journal_path))?;
        self.journal_bytes = header.len() as u64;
        self.classes = plan.classes.clone();
        self.current = true;
        Ok(())
    }
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
}
