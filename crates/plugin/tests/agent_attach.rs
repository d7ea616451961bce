//! The plugin's side of the attach protocol (`agentSocket`): ADD writes the pod's endpoint
//! file, asks the agent `attach` and returns only after the agent's answer; without an
//! agent ADD still succeeds (logged); DEL removes the file and says `detach`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn add_with_args(fx: &Fixture, conf: &Value, id: &str, pod: &Pod, args: &str) -> PluginOutput {
    let mut env = cni_env("ADD", id, &pod.path, "eth0");
    env.push(("CNI_ARGS".into(), args.into()));
    fx.run(weft_bin(), &env, &bytes(conf))
}

#[test]
fn add_waits_for_the_agent_and_del_tells_it() {
    let fx = Fixture::new();
    let run = fx.tmp_path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let socket = run.join("weftd.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let conf = fx.config_with(json!({"agentSocket": socket.to_string_lossy()}));
    let file = run.join("endpoints/c-attach-eth0.json");
    // The fake agent: checks the endpoint file is in place when asked, answers late.
    let agent = {
        let file = file.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let (stream, _) = listener.accept().unwrap();
                let mut line = String::new();
                BufReader::new(&stream).read_line(&mut line).unwrap();
                let req: Value = serde_json::from_str(&line).unwrap();
                let on_disk: Option<Value> = std::fs::read(&file)
                    .ok()
                    .map(|b| serde_json::from_slice(&b).unwrap());
                if req["op"] == "attach" {
                    std::thread::sleep(Duration::from_millis(400));
                }
                let answered = Instant::now();
                (&stream).write_all(b"{\"ok\":true}\n").unwrap();
                seen.push((req, on_disk, answered));
            }
            seen
        })
    };
    let pod = fx.pod();
    let out = add_with_args(
        &fx,
        &conf,
        "c-attach",
        &pod,
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0",
    );
    let returned = Instant::now();
    let result = out.expect_ok_json();
    fx.del(&conf, "c-attach", &pod.path, Some(&result));
    let seen = agent.join().unwrap();
    let (attach, ep, answered) = &seen[0];
    assert_eq!(
        attach,
        &json!({"op": "attach", "containerId": "c-attach", "ifname": "eth0"})
    );
    assert!(
        returned >= *answered,
        "ADD returned before the agent answered"
    );
    let ep = ep.as_ref().expect("endpoint file written before attach");
    assert_eq!(ep["namespace"], "shop");
    assert_eq!(ep["name"], "web-0");
    assert_eq!(ep["mode"], "bridge");
    assert!(ep["hostInterface"].as_str().unwrap().starts_with("wv"));
    let addr = result["ips"][0]["address"].as_str().unwrap();
    assert_eq!(
        ep["addresses"][0].as_str().unwrap(),
        addr.split('/').next().unwrap()
    );
    // The pod interface's MAC, which weftd's eBPF datapath addresses frames to.
    let pod_if = result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["sandbox"].is_string())
        .expect("the pod's interface");
    assert!(pod_if["mac"].is_string(), "{pod_if}");
    assert_eq!(ep["mac"], pod_if["mac"]);
    // What weftd needs to collect the pod should its DEL never come: the network, the
    // namespace (path, nsfs identity, directory identity) and when it was attached.
    assert_eq!(ep["network"], "t1");
    let ns = std::fs::metadata(&pod.path).unwrap();
    let dir = std::fs::metadata(Path::new(&pod.path).parent().unwrap()).unwrap();
    assert_eq!(
        ep["netns"],
        json!({"path": std::fs::canonicalize(Path::new(&pod.path).parent().unwrap())
                .unwrap().join(Path::new(&pod.path).file_name().unwrap()),
               "dev": ns.dev(), "ino": ns.ino(), "dirDev": dir.dev(), "dirIno": dir.ino()})
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let at = ep["attachedAtMs"].as_u64().expect("attachedAtMs");
    assert!(at <= now_ms && now_ms - at < 60_000, "{at} vs {now_ms}");
    let (detach, after_del, _) = &seen[1];
    assert_eq!(detach["op"], "detach");
    assert!(after_del.is_none(), "DEL removed the file before detach");
}

#[test]
fn add_succeeds_without_an_agent_and_del_cleans_up() {
    let fx = Fixture::new();
    let socket = fx.tmp_path().join("run/weftd.sock");
    let conf = fx.config_with(json!({"agentSocket": socket.to_string_lossy()}));
    let pod = fx.pod();
    let started = Instant::now();
    // No K8S_POD_*: namespace `default`, the container id as the name.
    let result = fx.add(&conf, "c-alone", &pod);
    assert!(started.elapsed() < Duration::from_secs(3));
    let file = fx.tmp_path().join("run/endpoints/c-alone-eth0.json");
    let ep: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        (ep["namespace"].as_str(), ep["name"].as_str()),
        (Some("default"), Some("c-alone"))
    );
    assert!(
        fx.log().contains("stays isolated"),
        "the missing agent is logged:\n{}",
        fx.log()
    );
    let started = Instant::now();
    fx.del(&conf, "c-alone", &pod.path, Some(&result));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(!file.exists());
}

#[test]
fn gc_removes_endpoint_files_of_stale_attachments() {
    let fx = Fixture::new();
    let socket = fx.tmp_path().join("run/weftd.sock");
    let conf = fx.config_with(json!({"agentSocket": socket.to_string_lossy()}));
    let (p1, p2) = (fx.pod(), fx.pod());
    fx.add(&conf, "c-keep", &p1);
    fx.add(&conf, "c-stale", &p2);
    let dir = fx.tmp_path().join("run/endpoints");
    let gc_conf = merged(
        &conf,
        json!({"cni.dev/valid-attachments": [{"containerID": "c-keep", "ifname": "eth0"}]}),
    );
    let env = vec![
        ("CNI_COMMAND".to_string(), "GC".to_string()),
        ("CNI_CONTAINERID".to_string(), String::new()),
        ("CNI_NETNS".to_string(), String::new()),
        ("CNI_IFNAME".to_string(), String::new()),
        ("CNI_PATH".to_string(), bin_dir()),
    ];
    fx.run(weft_bin(), &env, &bytes(&gc_conf)).expect_ok_empty();
    assert!(dir.join("c-keep-eth0.json").exists());
    assert!(!dir.join("c-stale-eth0.json").exists());
}
