//! Links: veth across namespaces, bridges, ports, macvlan, deletion, dumps, errors.

mod common;

use common::TestNs;
use weft_net::{Error, Handle, VethSpec, parse_mac};
use weft_testkit::require_root;

#[test]
fn veth_with_peer_in_other_namespace() {
    require_root!();
    let (a, b) = (TestNs::new(), TestNs::new());
    let (nsa, nsb) = (a.open(), b.open());
    let mut ha = Handle::new_in(&nsa).unwrap();
    let mac = parse_mac("02:42:0a:00:00:07").unwrap();
    let spec = VethSpec {
        host_name: "wvtest0",
        host_alias: Some("weft:net1:abcdef:eth0"),
        peer_name: "eth0",
        peer_ns: &nsb,
        mtu: Some(1400),
        peer_mac: Some(mac),
    };
    ha.create_veth(&spec).unwrap();

    let mut hb = Handle::new_in(&nsb).unwrap();
    let peer = hb.link_by_name("eth0").unwrap().expect("peer in B");
    assert_eq!(peer.kind.as_deref(), Some("veth"));
    assert_eq!(peer.mac, Some(mac));
    assert_eq!(peer.mtu, 1400);
    assert!(peer.link_netnsid.is_some());

    let host = ha.link_by_name("wvtest0").unwrap().expect("host end in A");
    assert_eq!(host.alias.as_deref(), Some("weft:net1:abcdef:eth0"));
    assert_eq!(host.mtu, 1400);
    assert_eq!(host.kind.as_deref(), Some("veth"));
    assert_eq!(host.peer_index, Some(peer.index));
    assert!(
        ha.link_by_name("eth0").unwrap().is_none(),
        "peer leaked into A"
    );
    assert_eq!(
        ha.link_by_index(host.index).unwrap().unwrap().name,
        "wvtest0"
    );
    assert!(
        a.ip(&["link", "show", "wvtest0"])
            .contains("alias weft:net1:abcdef:eth0")
    );

    let again = ha.create_veth(&spec).unwrap_err();
    assert!(again.is_exists(), "{again:?}");

    assert!(ha.delete_link_by_name("wvtest0").unwrap());
    assert!(hb.link_by_name("eth0").unwrap().is_none(), "peer survived");
    assert!(!ha.delete_link_by_name("wvtest0").unwrap());
}

#[test]
fn bridge_is_idempotent_and_checks_kind() {
    require_root!();
    let a = TestNs::new();
    let mut h = Handle::new_in(&a.open()).unwrap();
    let br = h.create_bridge("br-test", Some(1450), None).unwrap();
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert!(br.up);
    assert_eq!(br.mtu, 1450);
    let again = h.create_bridge("br-test", Some(1450), None).unwrap();
    assert_eq!(again.index, br.index);

    // Someone downed it: creating again brings it back up.
    a.ip(&["link", "set", "br-test", "down"]);
    assert!(h.create_bridge("br-test", None, None).unwrap().up);
    assert!(a.ip(&["link", "show", "br-test"]).contains(",UP"));

    // The hook runs on the still-down bridge, only when this call brings it up.
    let mut seen = Vec::new();
    let made = h
        .create_bridge_with("br-hook", None, None, |l| {
            seen.push((l.name.clone(), l.up));
            Ok(())
        })
        .unwrap();
    assert!(made.up);
    assert_eq!(seen, [("br-hook".to_owned(), false)]);
    h.create_bridge_with("br-hook", None, None, |_| panic!("already up"))
        .unwrap();
    let refused = h.create_bridge_with("br-hook2", None, None, |_| {
        Err(Error::NotFound {
            what: "test".to_owned(),
        })
    });
    assert!(refused.is_err());
    assert!(!a.ip(&["link", "show", "br-hook2"]).contains(",UP"));

    a.ip(&[
        "link",
        "add",
        "notabridge",
        "type",
        "veth",
        "peer",
        "name",
        "nb-peer",
    ]);
    match h.create_bridge("notabridge", None, None) {
        Err(Error::WrongKind { name, found, .. }) => {
            assert_eq!(name, "notabridge");
            assert_eq!(found, "veth");
        }
        other => panic!("expected WrongKind, got {other:?}"),
    }
}

#[test]
fn master_and_hairpin() {
    require_root!();
    let (a, b) = (TestNs::new(), TestNs::new());
    let (nsa, nsb) = (a.open(), b.open());
    let mut h = Handle::new_in(&nsa).unwrap();
    let br = h
        .create_bridge("br0", None, Some([0x02, 0, 0, 0, 0, 0x42]))
        .unwrap();
    h.create_veth(&VethSpec {
        host_name: "port0",
        host_alias: None,
        peer_name: "eth0",
        peer_ns: &nsb,
        mtu: None,
        peer_mac: None,
    })
    .unwrap();
    let port = h.link_by_name("port0").unwrap().unwrap();
    h.set_master(port.index, br.index).unwrap();
    h.set_up(port.index).unwrap();
    let port = h.link_by_index(port.index).unwrap().unwrap();
    assert_eq!(port.master, Some(br.index));
    assert!(port.up);
    // An explicit MAC holds even though the port's MAC would otherwise be adopted.
    let br_now = h.link_by_index(br.index).unwrap().unwrap();
    assert_eq!(br_now.mac, Some([0x02, 0, 0, 0, 0, 0x42]));

    let hairpin = || {
        let (ok, out) = a.exec(&["cat", "/sys/class/net/port0/brport/hairpin_mode"]);
        assert!(ok, "{out}");
        out.trim().to_owned()
    };
    assert_eq!(hairpin(), "0");
    h.set_hairpin(port.index, true).unwrap();
    assert_eq!(hairpin(), "1");
    assert!(
        a.ip(&["-d", "link", "show", "port0"])
            .contains("hairpin on")
    );
    h.set_hairpin(port.index, false).unwrap();
    assert_eq!(hairpin(), "0");

    h.set_master(port.index, 0).unwrap();
    assert_eq!(h.link_by_index(port.index).unwrap().unwrap().master, None);
    // Not a bridge port any more: the bridge driver refuses.
    assert!(h.set_hairpin(port.index, true).is_err());
}

#[test]
fn macvlan_created_in_target_namespace() {
    require_root!();
    let (a, b) = (TestNs::new(), TestNs::new());
    let (nsa, nsb) = (a.open(), b.open());
    a.ip(&[
        "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1",
    ]);
    a.ip(&["link", "set", "uplink0", "up"]);
    let mut h = Handle::new_in(&nsa).unwrap();
    let master = h.link_by_name("uplink0").unwrap().unwrap();
    let mac = parse_mac("02:00:00:00:be:ef").unwrap();
    h.create_macvlan("eth0", master.index, &nsb, Some(1400), Some(mac))
        .unwrap();
    assert!(h.link_by_name("eth0").unwrap().is_none());

    let mut hb = Handle::new_in(&nsb).unwrap();
    let mv = hb.link_by_name("eth0").unwrap().expect("macvlan in B");
    assert_eq!(mv.kind.as_deref(), Some("macvlan"));
    assert_eq!(mv.mac, Some(mac));
    assert_eq!(mv.mtu, 1400);
    assert!(
        b.ip(&["-d", "link", "show", "eth0"])
            .contains("macvlan mode bridge")
    );

    let dup = h
        .create_macvlan("eth0", master.index, &nsb, None, None)
        .unwrap_err();
    assert!(dup.is_exists(), "{dup:?}");
}

#[test]
fn link_attribute_setters() {
    require_root!();
    let a = TestNs::new();
    let nsa = a.open();
    let mut h = Handle::new_in(&nsa).unwrap();
    h.create_veth(&VethSpec {
        host_name: "v0",
        host_alias: None,
        peer_name: "v1",
        peer_ns: &nsa,
        mtu: None,
        peer_mac: None,
    })
    .unwrap();
    let v0 = h.link_by_name("v0").unwrap().unwrap();
    let mac = parse_mac("02:11:22:33:44:55").unwrap();
    h.set_mtu(v0.index, 1300).unwrap();
    h.set_mac(v0.index, mac).unwrap();
    h.set_alias(v0.index, "weft:x:y:z").unwrap();
    h.set_up(v0.index).unwrap();
    let v0 = h.link_by_index(v0.index).unwrap().unwrap();
    assert_eq!(
        (v0.mtu, v0.mac, v0.alias.as_deref(), v0.up),
        (1300, Some(mac), Some("weft:x:y:z"), true)
    );
    h.set_down(v0.index).unwrap();
    assert!(!h.link_by_index(v0.index).unwrap().unwrap().up);
}

#[test]
fn errors_are_typed_with_context() {
    require_root!();
    let a = TestNs::new();
    let nsa = a.open();
    let mut h = Handle::new_in(&nsa).unwrap();
    assert!(h.link_by_index(999_999).unwrap().is_none());
    assert!(h.link_by_name("nope0").unwrap().is_none());
    assert!(h.delete_link(999_999).unwrap_err().is_not_found());
    assert!(h.set_mtu(999_999, 1500).unwrap_err().is_not_found());
    assert!(matches!(
        h.link_by_name("this-name-is-way-too-long"),
        Err(Error::Invalid(_))
    ));

    a.ip(&["link", "add", "d0", "type", "bridge"]);
    let d0 = h.link_by_name("d0").unwrap().unwrap();
    let err = h.set_mtu(d0.index, 10).unwrap_err();
    match &err {
        Error::Kernel { op, errno, .. } => {
            assert_eq!(*op, "RTM_SETLINK");
            assert_eq!(*errno, libc::EINVAL);
        }
        other => panic!("expected Kernel error, got {other:?}"),
    }
    let text = err.to_string();
    // The kernel's extended ACK explains the EINVAL.
    assert!(text.contains("mtu less than device minimum"), "{text}");
    assert!(
        text.contains("RTM_SETLINK") && text.contains(&format!("#{}", d0.index)),
        "{text}"
    );
}

#[test]
fn dump_spanning_many_datagrams() {
    require_root!();
    let a = TestNs::new();
    let batch: String = (0..400)
        .map(|i| format!("link add dm{i} type bridge\n"))
        .collect();
    let path = std::env::temp_dir().join(format!("wtn{}-batch", std::process::id()));
    std::fs::write(&path, batch).unwrap();
    let out = std::process::Command::new("ip")
        .args(["-n", &a.name, "-batch"])
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut h = Handle::new_in(&a.open()).unwrap();
    let links = h.links().unwrap();
    assert_eq!(links.len(), 401);
    let mut names: Vec<_> = links.iter().map(|l| l.name.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 401);
    // The handle keeps working after a large dump (sequence numbers stay in step).
    assert!(h.link_by_name("dm399").unwrap().is_some());
}

#[test]
fn veth_created_up_and_enslaved_in_one_request() {
    require_root!();
    let (a, b) = (TestNs::new(), TestNs::new());
    let (nsa, nsb) = (a.open(), b.open());
    let mut h = Handle::new_in(&nsa).unwrap();
    let br = h.create_bridge("br1", None, None).unwrap();
    let spec = VethSpec {
        host_name: "port1",
        host_alias: Some("weft:n:c:eth0"),
        peer_name: "eth0",
        peer_ns: &nsb,
        mtu: None,
        peer_mac: None,
    };
    let opts = weft_net::VethOptions {
        master: Some(br.index),
        up: true,
    };
    let echoed = h
        .create_veth_with(&spec, opts)
        .unwrap()
        .expect("this kernel echoes RTM_NEWLINK");
    let port = h.link_by_name("port1").unwrap().expect("host end");
    assert_eq!(echoed.index, port.index);
    assert_eq!(echoed.mac, port.mac);
    assert_eq!(echoed.master, Some(br.index));
    assert_eq!(echoed.alias.as_deref(), Some("weft:n:c:eth0"));
    assert_eq!(port.master, Some(br.index));
    assert!(port.up);
    assert_eq!(port.alias.as_deref(), Some("weft:n:c:eth0"));
    let peer = Handle::new_in(&nsb)
        .unwrap()
        .link_by_name("eth0")
        .unwrap()
        .expect("peer");
    assert!(
        !peer.up,
        "the peer is left down for the caller to configure"
    );
}
