//! Plan diffs committed over netlink (`policy::netlink`: elements, and for policy edits new
//! and vanished class/atom chains, sets and port maps) leave the kernel exactly where
//! `nft -f` of the new plan from scratch does: plan A is applied with `nft -f` in one
//! scratch namespace, diff(A, B) as one netlink batch on top, and `nft -j list table` is
//! compared (handles and counter values aside) with a second namespace holding plan B
//! applied from scratch. A refused batch changes nothing.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;
use weft_agent::policy::netlink;
use weft_net::NetNs;
use weft_nft::{Element, Session, SetKind, TableBatch};
use weft_policy::World;
use weft_policy::plan::{self, Op, Plan, PlanOptions};
use weft_policy::testing::*;
use weft_testkit::TestNs;

const TABLE: &str = "wtnl_policy";

/// A scratch network namespace (weft-testkit's, `wtnl<tag>…`), removed on drop.
struct Scratch(TestNs);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        Scratch(TestNs::new(&format!("wtnl{tag}")))
    }

    fn nft(&self, script: &str) -> Result<(), String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.0.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write script");
        let out = child.wait_with_output().expect("wait nft");
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Replace whatever table is there with `plan`, as `nft -f` from scratch.
    fn load(&self, plan: &Plan) {
        let script = format!(
            "add table inet {TABLE}\ndelete table inet {TABLE}\n{}",
            plan::render(plan)
        );
        if let Err(e) = self.nft(&script) {
            panic!("nft -f of a plan failed: {e}");
        }
    }

    fn netns(&self) -> NetNs {
        NetNs::open(&self.0.path()).expect("open netns")
    }

    /// Commits `batch` in this namespace; a refusal comes back as its message (which names
    /// the set or chain), once checked to be the kernel's refusal of the batch.
    fn commit(&self, batch: TableBatch) -> Result<(), String> {
        self.netns()
            .run(|| netlink::commit(batch))
            .expect("enter netns")
            .map_err(|e| {
                assert!(matches!(e, weft_agent::policy::Error::Commit(_)), "{e}");
                e.to_string()
            })
    }

    /// A socket in this namespace, kept open across commits.
    fn session(&self) -> Session {
        self.netns()
            .run(Session::open)
            .expect("enter netns")
            .expect("open netlink socket")
    }

    /// `nft -j list table`, as nft prints it.
    fn list_json(&self) -> Value {
        let out = self
            .0
            .output(&["nft", "-j", "list", "table", "inet", TABLE]);
        assert!(
            out.status.success(),
            "nft list: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("nft json")
    }

    /// `nft -j list table`, normalised: no handles, counters at zero, set elements sorted,
    /// objects keyed by kind and name (rules kept in chain order).
    fn listing(&self) -> BTreeMap<String, Value> {
        let v = self.list_json();
        let mut objs = BTreeMap::new();
        for o in v["nftables"].as_array().expect("nftables array") {
            let mut o = o.clone();
            normalise(&mut o);
            let Some((kind, body)) = o.as_object().and_then(|m| m.iter().next()) else {
                continue;
            };
            match kind.as_str() {
                "metainfo" => {}
                "rule" => {
                    let chain = body["chain"].as_str().unwrap_or_default().to_string();
                    let e = objs
                        .entry(format!("rules {chain}"))
                        .or_insert_with(|| Value::Array(vec![]));
                    if let Value::Array(a) = e {
                        a.push(body.clone());
                    }
                }
                _ => {
                    let name = body["name"].as_str().unwrap_or_default();
                    objs.insert(format!("{kind} {name}"), body.clone());
                }
            }
        }
        objs
    }
}

fn normalise(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("handle");
            for k in ["packets", "bytes"] {
                if let Some(x) = m.get_mut(k) {
                    *x = Value::from(0);
                }
            }
            for (k, x) in m.iter_mut() {
                normalise(x);
                if k == "elem"
                    && let Value::Array(a) = x
                {
                    a.sort_by_key(|e| e.to_string());
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalise),
        _ => {}
    }
}

fn opts() -> PlanOptions {
    PlanOptions {
        table: TABLE.to_string(),
        ..PlanOptions::new("a")
    }
}

fn is_element_op(op: &Op) -> bool {
    matches!(
        op,
        Op::AddElements { .. } | Op::DeleteElements { .. } | Op::ReplaceElements { .. }
    )
}

/// What `netlink::batch` must take: everything but the table, base chains and replaced
/// chains (the plan's regular chains use only rule kinds the batch supports).
fn is_netlink_op(op: &Op) -> bool {
    match op {
        Op::AddTable | Op::ReplaceChain { .. } => false,
        Op::AddChain { chain, .. } => chain.hook.is_none(),
        _ => true,
    }
}

/// What the two listings disagree on, for a failure message.
fn differences(a: &BTreeMap<String, Value>, b: &BTreeMap<String, Value>) -> String {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut out = String::new();
    for k in keys {
        if a.get(k) != b.get(k) {
            out.push_str(&format!(
                "{k}:\n  netlink {}\n  scratch {}\n",
                a.get(k).map_or("-".into(), |v| v.to_string()),
                b.get(k).map_or("-".into(), |v| v.to_string())
            ));
        }
    }
    out
}

/// A applied by nft, then diff(A, B) over netlink, equals B applied by nft. Returns false
/// (and changes nothing) when the diff can't go over netlink (table, base chains).
fn check_step(inc: &Scratch, fresh: &Scratch, a: &Plan, b: &Plan, what: &str) -> bool {
    check_step_on(inc, fresh, a, b, what, None)
}

/// As [`check_step`], committing on `session` (a socket kept open in `inc`) when given.
fn check_step_on(
    inc: &Scratch,
    fresh: &Scratch,
    a: &Plan,
    b: &Plan,
    what: &str,
    session: Option<&mut Session>,
) -> bool {
    let ops = plan::diff(a, b);
    let Some(batch) = netlink::batch(TABLE, &ops, a, b) else {
        assert!(
            !ops.iter().all(is_netlink_op),
            "{what}: netlink-able diff refused: {ops:?}"
        );
        return false;
    };
    let res = match session {
        Some(s) => netlink::commit_on(s, batch).map_err(|e| e.to_string()),
        None => inc.commit(batch),
    };
    if let Err(e) = res {
        panic!("{what}: commit failed: {e}\nops: {ops:?}");
    }
    fresh.load(b);
    let (x, y) = (inc.listing(), fresh.listing());
    assert!(x == y, "{what}: listings differ\n{}", differences(&x, &y));
    true
}

/// One change A → B on fresh namespaces; asserts it was element-only.
fn element_only_change(tag: &str, a: &World, b: &World, what: &str) {
    let (pa, pb) = (plan::compile(a, &opts()), plan::compile(b, &opts()));
    let ops = plan::diff(&pa, &pb);
    assert!(!ops.is_empty(), "{what}: no change");
    assert!(
        ops.iter().all(is_element_op),
        "{what}: not element-only: {ops:?}"
    );
    let (inc, fresh) = (Scratch::new(tag), Scratch::new(tag));
    inc.load(&pa);
    assert!(check_step(&inc, &fresh, &pa, &pb, what), "{what}");
    // And back, B → A, on the same namespaces.
    inc.load(&pb);
    assert!(check_step(&inc, &fresh, &pb, &pa, what), "{what} (back)");
}

const POLICIES: &str = "
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-in, namespace: n0}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - {podSelector: {matchLabels: {app: cli}}, namespaceSelector: {}}
    - {ipBlock: {cidr: 203.0.113.0/24, except: [203.0.113.128/25]}}
    - {ipBlock: {cidr: 'fd00:9::/32', except: ['fd00:9:1::/48']}}
    ports: [{protocol: TCP, port: 5432}, {protocol: TCP, port: http}]
  - from:
    - {podSelector: {matchLabels: {app: web}}}
    ports: [{protocol: TCP, port: 8000, endPort: 8100}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-out, namespace: n0}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: db}}}, {ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}]
    ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 5432}]
";

fn base() -> World {
    world(
        vec![namespace("n0", "team=a"), namespace("n1", "team=b")],
        vec![
            pod("n0", "web-1", "a", &["10.0.1.2", "fd00:1::2"], "app=web"),
            with_port(
                pod("n0", "db-1", "a", &["10.0.1.3", "fd00:1::3"], "app=db"),
                "http",
                weft_policy::Protocol::Tcp,
                8080,
            ),
            pod("n1", "cli-1", "b", &["10.0.2.2", "fd00:2::2"], "app=cli"),
            pod("n1", "cli-2", "b", &["10.0.2.3"], "app=other"),
        ],
        policies(POLICIES),
    )
}

fn edit_block(w: &mut World, policy: &str, cidr: &str, except: &[&str]) {
    use weft_policy::PolicyPeer;
    let p = w
        .policies
        .iter_mut()
        .find(|p| p.name == policy)
        .expect("policy");
    for rule in p.spec.ingress.iter_mut().chain(p.spec.egress.iter_mut()) {
        for peer in rule.peers.iter_mut() {
            if let PolicyPeer::IpBlock(b) = peer
                && b.cidr.to_string() == cidr
            {
                b.except = except.iter().map(|e| e.parse().expect("cidr")).collect();
            }
        }
    }
}

#[test]
fn pod_added_and_removed() {
    let a = base();
    let mut b = a.clone();
    b.endpoints.push(pod(
        "n1",
        "cli-3",
        "b",
        &["10.0.2.4", "fd00:2::4"],
        "app=cli",
    ));
    element_only_change("add", &a, &b, "remote peer pod added");
    let mut c = a.clone();
    c.endpoints.push(pod(
        "n0",
        "web-2",
        "a",
        &["10.0.1.9", "fd00:1::9"],
        "app=web",
    ));
    element_only_change("addl", &a, &c, "local isolated pod added");
}

#[test]
fn label_change_moves_peer_addresses() {
    let a = base();
    let mut b = a.clone();
    let e = b
        .endpoints
        .iter_mut()
        .find(|e| e.name == "cli-2")
        .expect("pod");
    e.labels = kv("app=cli");
    element_only_change("lbl", &a, &b, "relabel into a peer selector");
}

#[test]
fn ip_block_except_edits_swap_interval_sets() {
    // An ipBlock's set stands for its CIDR and excepts (shared by every rule naming the
    // same block), so an edit is a new interval set read by a new atom, the old ones
    // deleted after the port map moved over: all over netlink, both ways.
    let a = base();
    let mut b = a.clone();
    edit_block(&mut b, "db-in", "203.0.113.0/24", &["203.0.113.0/26"]);
    edit_block(
        &mut b,
        "db-in",
        "fd00:9::/32",
        &["fd00:9:2::/48", "fd00:9:ffff::/48"],
    );
    let (pa, pb) = (plan::compile(&a, &opts()), plan::compile(&b, &opts()));
    let ops = plan::diff(&pa, &pb);
    for v6 in [false, true] {
        assert!(
            ops.iter()
                .any(|o| matches!(o, Op::AddSet { name, interval: true, key, .. }
                if name.starts_with("pn_") && (*key == plan::KeyType::Ipv6) == v6)),
            "a new interval set (v6 {v6}): {ops:?}"
        );
    }
    object_change("cut", &a, &b, "ipBlock excepts");
    // 0.0.0.0/0 except 10/8: an interval reaching the top of the space.
    let mut c = a.clone();
    edit_block(
        &mut c,
        "web-out",
        "0.0.0.0/0",
        &["10.0.0.0/8", "192.168.0.0/16"],
    );
    object_change("top", &a, &c, "excepts of 0.0.0.0/0");
    let mut d = a.clone();
    edit_block(&mut d, "web-out", "0.0.0.0/0", &[]);
    object_change("all", &a, &d, "0.0.0.0/0 whole");
    // IPv6 at the top of the space: ::/0 minus fd00::/8 and ffff::/16 (the last range ends
    // below ffff::, the one before it is open-ended no more), then ::/0 whole.
    let mut e = a.clone();
    set_block(&mut e, "fd00:9::/32", "::/0", &["fd00::/8", "ffff::/16"]);
    object_change("v6top", &a, &e, "::/0 with excepts");
    let mut f = a.clone();
    set_block(&mut f, "fd00:9::/32", "::/0", &[]);
    object_change("v6all", &e, &f, "::/0 whole");
}

/// Replace the ipBlock `cidr` (any policy) by `new` with `except`.
fn set_block(w: &mut World, cidr: &str, new: &str, except: &[&str]) {
    use weft_policy::PolicyPeer;
    for p in w.policies.iter_mut() {
        for rule in p.spec.ingress.iter_mut().chain(p.spec.egress.iter_mut()) {
            for peer in rule.peers.iter_mut() {
                if let PolicyPeer::IpBlock(b) = peer
                    && b.cidr.to_string() == cidr
                {
                    b.cidr = new.parse().expect("cidr");
                    b.except = except.iter().map(|e| e.parse().expect("cidr")).collect();
                }
            }
        }
    }
}

#[test]
fn port_map_changes() {
    use weft_policy::{PolicyPort, PortRef, Protocol};
    let a = base();
    // A port joins a region of equal coverage: a new map entry jumping to the same atom.
    let mut b = a.clone();
    b.policies[1].spec.egress[0].ports.push(PolicyPort {
        protocol: Protocol::Tcp,
        port: Some(PortRef::Number(6379)),
        end_port: None,
    });
    element_only_change("padd", &a, &b, "egress port added");
    // endPort widened: the (proto . port range) entry is re-cut in the pipapo map.
    let mut c = a.clone();
    c.policies[0].spec.ingress[1].ports[0].end_port = Some(8200);
    element_only_change("pcut", &a, &c, "endPort widened");

    // A verdict change on the same key: point one entry of a port map at another atom (a
    // plan edited by hand, valid since the atom's chain exists).
    let pa = plan::compile(&a, &opts());
    let mut pb = pa.clone();
    let atoms: Vec<String> = pa
        .chains
        .keys()
        .filter(|c| c.starts_with("ai_"))
        .cloned()
        .collect();
    let (_, map) = pb
        .sets
        .iter_mut()
        .find(|(n, s)| n.starts_with("ci_") && s.map && s.elements.len() > 1)
        .expect("an ingress port map");
    let (_, v) = map.elements.iter_mut().next().expect("an entry");
    let other = atoms
        .iter()
        .find(|c| Some(&plan::Verdict::Jump(c.to_string())) != v.as_ref())
        .expect("another atom");
    *v = Some(plan::Verdict::Jump(other.clone()));
    let ops = plan::diff(&pa, &pb);
    assert!(
        matches!(&ops[..], [Op::ReplaceElements { .. }]),
        "one replace: {ops:?}"
    );
    let (inc, fresh) = (Scratch::new("pvd"), Scratch::new("pvd"));
    inc.load(&pa);
    assert!(check_step(
        &inc,
        &fresh,
        &pa,
        &pb,
        "port-map verdict changed"
    ));
    assert!(check_step(
        &inc,
        &fresh,
        &pb,
        &pa,
        "port-map verdict changed back"
    ));
}

#[test]
fn randomized_sequences_stay_equal() {
    use weft_policy::testing::Mutation::*;
    let kinds = [
        AddPod,
        RemovePod,
        Relabel,
        Relabel,
        EditCidr,
        EditPort,
        NamespaceLabel,
        AddPolicy,
        RemovePolicy,
    ];
    let (mut element_only, mut other) = (0, 0);
    let mut with_objects = 0;
    let mut by_kind: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for seed in 0..10u64 {
        let mut r = Rng::new(1000 + seed);
        let mut w = random_world(&mut r);
        // Seeds 2, 5, 8: class chains with deny logging (a `limit … log` rule). Seeds 0,
        // 4, 8: a union atom for every port region (`pu_`/`nu_` sets patched and recut).
        let o = PlanOptions {
            log_per_second: (seed % 3 == 2).then_some(3),
            union_above: if seed % 4 == 0 { 0 } else { opts().union_above },
            ..opts()
        };
        let mut cur = plan::compile(&w, &o);
        let (inc, fresh) = (Scratch::new("rnd"), Scratch::new("rnd"));
        inc.load(&cur);
        // Odd seeds commit on one socket kept for the whole sequence (the agent's way).
        let mut session = (seed % 2 == 1).then(|| inc.session());
        for step in 0..30 {
            let m = *r.pick(&kinds);
            let Some(w2) = mutate(&mut r, &w, m) else {
                continue;
            };
            let next = plan::compile(&w2, &o);
            let what = format!("seed {seed} step {step} {m:?}");
            if plan::diff(&cur, &next).is_empty() {
                w = w2;
                continue;
            }
            let tally = by_kind.entry(format!("{m:?}")).or_default();
            let objects = !plan::diff(&cur, &next).iter().all(is_element_op);
            if check_step_on(&inc, &fresh, &cur, &next, &what, session.as_mut()) {
                element_only += 1;
                with_objects += usize::from(objects);
                tally.0 += 1;
            } else {
                other += 1;
                tally.1 += 1;
                // Not element-only: the agent's fallback, nft -f of the rendered diff.
                let script = plan::render_ops(TABLE, &plan::diff(&cur, &next));
                if let Err(e) = inc.nft(&script) {
                    panic!("{what}: nft -f fallback failed: {e}");
                }
            }
            w = w2;
            cur = next;
        }
    }
    eprintln!(
        "randomized: {element_only} diffs over netlink ({with_objects} of them with chains \
         or sets), {other} via nft -f (per change kind, netlink/nft: {by_kind:?})"
    );
    // Every diff after the first build goes over netlink: the plans never replace a base
    // chain (the options are fixed).
    assert_eq!(other, 0, "diffs fell back to nft -f: {by_kind:?}");
    assert!(
        with_objects > 0,
        "the sequences should create or delete chains and sets"
    );
}

#[test]
fn refused_batch_changes_nothing_and_names_the_set() {
    let a = base();
    let pa = plan::compile(&a, &opts());
    let ns = Scratch::new("fail");
    ns.load(&pa);
    let before = ns.listing();
    // A peer set with elements, to add to and to delete a missing element from.
    let (name, set) = pa
        .sets
        .iter()
        .find(|(_, s)| {
            s.role == plan::Role::Peers
                && !s.interval
                && s.key == plan::KeyType::Ipv4
                && !s.elements.is_empty()
        })
        .expect("a peer set of IPv4 pod addresses");
    let mut b = TableBatch::new(TABLE);
    b.add_elements(name, SetKind::Hash, &[Element::key(vec![10, 0, 1, 200])]);
    b.delete_elements(name, SetKind::Hash, &[Element::key(vec![10, 0, 1, 201])]);
    let err = ns
        .commit(b)
        .expect_err("deleting a missing element must fail");
    assert!(err.contains(&format!("set {name}")), "{err}");
    assert!(err.contains("delete"), "{err}");
    assert_eq!(ns.listing(), before, "a refused batch must change nothing");
    assert!(!set.elements.is_empty());

    // A set that does not exist: the earlier valid add is rolled back too.
    let mut b = TableBatch::new(TABLE);
    b.add_elements(name, SetKind::Hash, &[Element::key(vec![10, 0, 1, 200])]);
    b.add_elements(
        "no_such_set",
        SetKind::Hash,
        &[Element::key(vec![1, 2, 3, 4])],
    );
    let err = ns.commit(b).expect_err("a missing set must fail");
    assert!(err.contains("set no_such_set"), "{err}");
    assert_eq!(ns.listing(), before, "a refused batch must change nothing");

    // An interval delete that does not match an element exactly (a sub-range).
    let (iname, _) = pa
        .sets
        .iter()
        .find(|(_, s)| s.interval && s.key == plan::KeyType::Ipv4 && !s.elements.is_empty())
        .expect("an IPv4 interval set");
    let mut b = TableBatch::new(TABLE);
    b.delete_elements(
        iname,
        SetKind::Interval,
        &[Element::range(vec![203, 0, 113, 0], vec![203, 0, 113, 1])],
    );
    let err = ns
        .commit(b)
        .expect_err("a partial interval delete must fail");
    assert!(err.contains(&format!("set {iname}")), "{err}");
    assert_eq!(ns.listing(), before);

    // A kept socket stays usable after a refused batch: the next commit lands.
    let mut session = ns.session();
    let mut b = TableBatch::new(TABLE);
    b.add_elements(name, SetKind::Hash, &[Element::key(vec![10, 0, 1, 200])]);
    b.add_elements(
        "no_such_set",
        SetKind::Hash,
        &[Element::key(vec![1, 2, 3, 4])],
    );
    netlink::commit_on(&mut session, b).expect_err("a missing set must fail");
    assert_eq!(ns.listing(), before);
    let mut b = TableBatch::new(TABLE);
    b.add_elements(name, SetKind::Hash, &[Element::key(vec![10, 0, 1, 200])]);
    netlink::commit_on(&mut session, b).expect("commit after a refused one");
    let after = ns.listing();
    let set = &after[&format!("set {name}")];
    assert!(
        set["elem"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e == "10.0.1.200")),
        "{set}"
    );
}

#[test]
fn counted_set_elements_get_counters() {
    // A local pod added to an isolated class lands in the `denied_*` sets (declared
    // `counter`): the kernel must give the netlink-added element its counter.
    let a = base();
    let mut b = a.clone();
    b.endpoints.push(with_port(
        pod("n0", "db-2", "a", &["10.0.1.10", "fd00:1::10"], "app=db"),
        "http",
        weft_policy::Protocol::Tcp,
        8080,
    ));
    let (pa, pb) = (plan::compile(&a, &opts()), plan::compile(&b, &opts()));
    let ops = plan::diff(&pa, &pb);
    let counted: Vec<&String> = pb
        .sets
        .iter()
        .filter(|(_, s)| s.role == plan::Role::Counted)
        .map(|(n, _)| n)
        .collect();
    assert!(
        ops.iter()
            .any(|o| matches!(o, Op::AddElements { set, .. } if counted.contains(&set))),
        "the change adds to a counted set: {ops:?}"
    );
    let ns = Scratch::new("cnt");
    ns.load(&pa);
    let batch = netlink::batch(TABLE, &ops, &pa, &pb).expect("element-only");
    ns.commit(batch).expect("commit");
    let l = ns.listing();
    let mut seen = false;
    for n in counted {
        for e in l[&format!("set {n}")]["elem"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert!(
                e["elem"]["counter"].is_object(),
                "set {n} element without counter: {e}"
            );
            if e["elem"]["val"] == "10.0.1.10" {
                seen = true;
            }
        }
    }
    assert!(seen, "new pod's counted element present");
}

#[test]
fn large_batch_spans_many_messages() {
    // Well past the default socket send buffer (~200 KiB) and one message's 64 KiB.
    let ns = Scratch::new("big");
    ns.nft(&format!(
        "add table inet {TABLE}\nadd set inet {TABLE} big {{ type ipv4_addr; }}\n\
         add map inet {TABLE} bigi {{ type ipv4_addr : verdict; flags interval; }}\n"
    ))
    .expect("create sets");
    let n = 20_000u32;
    let keys: Vec<Element> = (0..n)
        .map(|i| Element::key((0x0a00_0000 + i).to_be_bytes().to_vec()))
        .collect();
    // Disjoint /31 ranges with verdicts in the interval map.
    let ranges: Vec<Element> = (0..n)
        .map(|i| {
            let lo = 0x0b00_0000 + 4 * i;
            Element::range(lo.to_be_bytes().to_vec(), (lo + 1).to_be_bytes().to_vec())
                .with_verdict(weft_nft::Verdict::Drop)
        })
        .collect();
    let count = |set: &str| -> usize {
        ns.list_json()["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| {
                let s = if o["set"].is_object() {
                    &o["set"]
                } else {
                    &o["map"]
                };
                (s["name"] == set).then(|| s["elem"].as_array()).flatten()
            })
            .map(Vec::len)
            .sum()
    };
    let mut b = TableBatch::new(TABLE);
    b.add_elements("big", SetKind::Hash, &keys);
    b.add_elements("bigi", SetKind::Interval, &ranges);
    ns.commit(b).expect("large add");
    assert_eq!(count("big"), n as usize);
    assert_eq!(count("bigi"), n as usize);
    let mut b = TableBatch::new(TABLE);
    b.delete_elements("big", SetKind::Hash, &keys);
    b.delete_elements("bigi", SetKind::Interval, &ranges);
    ns.commit(b).expect("large delete");
    assert_eq!(count("big"), 0);
    assert_eq!(count("bigi"), 0);
}

/// One change A → B (and back) that creates or deletes chains or sets: all of it over
/// netlink, ending where `nft -f` of the target plan from scratch does.
fn object_change(tag: &str, a: &World, b: &World, what: &str) {
    object_change_with(tag, a, b, what, &opts());
}

fn object_change_with(tag: &str, a: &World, b: &World, what: &str, o: &PlanOptions) {
    let (pa, pb) = (plan::compile(a, o), plan::compile(b, o));
    for (x, y, dir) in [(&pa, &pb, "forth"), (&pb, &pa, "back")] {
        let ops = plan::diff(x, y);
        assert!(
            ops.iter().any(|o| !is_element_op(o)),
            "{what} ({dir}): no chain or set changes: {ops:?}"
        );
        assert!(ops.iter().all(is_netlink_op), "{what} ({dir}): {ops:?}");
    }
    let (inc, fresh) = (Scratch::new(tag), Scratch::new(tag));
    inc.load(&pa);
    assert!(check_step(&inc, &fresh, &pa, &pb, what), "{what}");
    // Back, B → A, on top of the netlink-built state (chains and sets deleted again).
    assert!(
        check_step(&inc, &fresh, &pb, &pa, &format!("{what} (back)")),
        "{what} (back)"
    );
}

fn op_names(ops: &[Op]) -> Vec<&'static str> {
    ops.iter()
        .map(|o| match o {
            Op::AddSet { .. } => "AddSet",
            Op::AddChain { .. } => "AddChain",
            Op::DeleteChain { .. } => "DeleteChain",
            Op::DeleteSet { .. } => "DeleteSet",
            _ => "elements",
        })
        .collect()
}

#[test]
fn policy_edits_create_and_delete_chains_over_netlink() {
    use weft_policy::{PolicyPort, PortRef, Protocol};
    let a = base();

    // A port moved where the same rules cover it: atoms are named after the peer sets they
    // read, so the new region jumps to the same atom — port-map elements only.
    let mut b = a.clone();
    b.policies[0].spec.ingress[0].ports[0].port = Some(PortRef::Number(5433));
    element_only_change("pmov", &a, &b, "port moved");

    // A port added inside another rule's range: a region covered by both rules, whose peer
    // sets together are what another region's atom reads already (this world's rules
    // name the same peers): it jumps there, port-map elements only.
    let mut c = a.clone();
    c.policies[0].spec.ingress[0].ports.push(PolicyPort {
        protocol: Protocol::Tcp,
        port: Some(PortRef::Number(8050)),
        end_port: None,
    });
    element_only_change("padd2", &a, &c, "port added into a range");

    // A policy selecting local pods no policy selected in that direction: a new class
    // (chain, port map) and its atoms; back, the policy deleted: all of them go.
    let mut d = a.clone();
    d.policies.extend(policies(
        "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-in, namespace: n0}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: cli}}, namespaceSelector: {}}]
    ports: [{protocol: TCP, port: 443}]
",
    ));
    object_change("padd", &a, &d, "policy added: new class");
    // The same with deny logging: class chains carry a `limit … log prefix` rule.
    let logged = PlanOptions {
        log_per_second: Some(7),
        ..opts()
    };
    object_change_with("plog", &a, &d, "policy added: new class, logged", &logged);
    let ops = plan::diff(&plan::compile(&d, &opts()), &plan::compile(&a, &opts()));
    assert!(
        ops.iter()
            .any(|o| matches!(o, Op::DeleteChain { name } if name.starts_with("ci_")))
            && ops
                .iter()
                .any(|o| matches!(o, Op::DeleteSet { map: true, .. })),
        "policy deleted: class chain and port map deleted: {:?}",
        op_names(&ops)
    );

    // A whole policy deleted from the base world.
    let mut e = a.clone();
    e.policies.retain(|p| p.name != "web-out");
    object_change("pdel", &a, &e, "policy deleted");

    // ipBlocks added where there were none: atoms with new interval sets, IPv4 and IPv6.
    let mut f = a.clone();
    f.policies[0].spec.ingress[1].peers.extend(
        policies(
            "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: tmp, namespace: n0}
spec:
  podSelector: {}
  ingress:
  - from: [{ipBlock: {cidr: 198.51.100.0/24}}, {ipBlock: {cidr: 'fd00:7::/48', except: ['fd00:7:0:1::/64']}}]
",
        )[0]
        .spec
        .ingress[0]
        .peers
        .clone(),
    );
    object_change("blk", &a, &f, "ipBlocks added");
    let pf = plan::compile(&f, &opts());
    let ops = plan::diff(&plan::compile(&a, &opts()), &pf);
    for key in [plan::KeyType::Ipv4, plan::KeyType::Ipv6] {
        assert!(
            ops.iter()
                .any(|o| matches!(o, Op::AddSet { key: k, interval: true, .. } if *k == key)),
            "new {key:?} interval set: {:?}",
            op_names(&ops)
        );
    }
}

#[test]
fn refused_object_batch_changes_nothing_and_names_the_object() {
    use weft_nft::{Field, Rule, Verdict};
    let pa = plan::compile(&base(), &opts());
    let ns = Scratch::new("ofail");
    ns.load(&pa);
    let before = ns.listing();
    let (peer, _) = pa
        .sets
        .iter()
        .find(|(_, s)| s.role == plan::Role::Peers && s.key == plan::KeyType::Ipv4)
        .expect("an atom's peer set");

    // A new chain whose rule jumps to a chain that does not exist.
    let mut b = TableBatch::new(TABLE);
    b.add_chain("wtnl_new").add_rule(
        "wtnl_new",
        &Rule::AddrIn {
            v6: false,
            field: Field::Saddr,
            set: peer.clone(),
            verdict: Verdict::Jump("wtnl_missing".into()),
        },
    );
    let err = ns
        .commit(b)
        .expect_err("a jump to a missing chain must fail");
    assert!(
        err.contains("chain wtnl_new") && err.contains("wtnl_missing"),
        "{err}"
    );
    assert_eq!(ns.listing(), before, "a refused batch must change nothing");

    // Deleting a set an atom chain still reads, after a valid new chain: both undone.
    let mut b = TableBatch::new(TABLE);
    b.add_chain("wtnl_ok").delete_set(peer);
    let err = ns
        .commit(b)
        .expect_err("deleting a referenced set must fail");
    assert!(err.contains(&format!("set {peer}")), "{err}");
    assert_eq!(ns.listing(), before, "a refused batch must change nothing");

    // Deleting a chain a port map still jumps to.
    let atom = pa
        .chains
        .keys()
        .find(|c| c.starts_with("ai_"))
        .expect("an atom chain");
    let mut b = TableBatch::new(TABLE);
    b.delete_chain(atom);
    let err = ns
        .commit(b)
        .expect_err("deleting a referenced chain must fail");
    assert!(err.contains(&format!("chain {atom}")), "{err}");
    assert_eq!(ns.listing(), before, "a refused batch must change nothing");
}

/// Every set kind the plan has (also those only the first build creates: self pairs,
/// counted sets, pod maps), created over netlink, lists exactly like `nft -f` made it; the
/// counted set's new element gets its counter.
#[test]
fn every_set_kind_lists_like_nft() {
    use weft_nft::{KeyType as K, SetSpec};
    let kinds: [(&str, &str, K, bool, bool, bool); 10] = [
        ("a4", "set", K::Ipv4, false, false, false),
        ("n4", "set", K::Ipv4, true, false, false),
        ("a6", "set", K::Ipv6, false, false, false),
        ("n6", "set", K::Ipv6, true, false, false),
        ("p4", "set", K::Ipv4Pair, false, false, false),
        ("p6", "set", K::Ipv6Pair, false, false, false),
        ("c4", "set", K::Ipv4, false, false, true),
        ("c6", "set", K::Ipv6, false, false, true),
        ("m4", "map", K::Ipv4, false, true, false),
        ("pm", "map", K::ProtoPort, true, true, false),
    ];
    let (inc, fresh) = (Scratch::new("kinds"), Scratch::new("kinds"));
    inc.nft(&format!("add table inet {TABLE}\n"))
        .expect("table");
    let mut script = format!("add table inet {TABLE}\n");
    let mut b = TableBatch::new(TABLE);
    for (name, what, key, interval, verdict_map, counter) in kinds {
        let ty = match key {
            K::Ipv4 => "ipv4_addr",
            K::Ipv6 => "ipv6_addr",
            K::Ipv4Pair => "ipv4_addr . ipv4_addr",
            K::Ipv6Pair => "ipv6_addr . ipv6_addr",
            K::ProtoPort => "inet_proto . inet_service",
        };
        let data = if verdict_map { " : verdict" } else { "" };
        let flags = if interval { " flags interval;" } else { "" };
        let cnt = if counter { " counter;" } else { "" };
        script.push_str(&format!(
            "add {what} inet {TABLE} {name} {{ type {ty}{data};{flags}{cnt} }}\n"
        ));
        b.add_set(
            name,
            &SetSpec {
                key,
                interval,
                verdict_map,
                counter,
            },
        );
    }
    script.push_str(&format!("add element inet {TABLE} c4 {{ 10.0.0.1 }}\n"));
    b.add_elements("c4", SetKind::Hash, &[Element::key(vec![10, 0, 0, 1])]);
    fresh.nft(&script).expect("nft -f");
    inc.commit(b).expect("netlink");
    let (x, y) = (inc.listing(), fresh.listing());
    assert!(x == y, "listings differ\n{}", differences(&x, &y));
    let elems = x["set c4"]["elem"].as_array().expect("c4 elements");
    assert!(elems[0]["elem"]["counter"].is_object(), "{elems:?}");
}
