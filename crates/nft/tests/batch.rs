//! One netlink batch of thousands of messages, as a policy plan of thousands of sets makes:
//! every message asks for an ACK, queued on our socket before send() returns.

mod common;

use common::{Netns, objects};
use weft_nft::{KeyType, SetSpec, TableBatch};

const TABLE: &str = "wtf_batch";

#[test]
fn a_batch_of_thousands_of_sets_is_committed_and_every_ack_read() {
    weft_testkit::assert_root();
    let ns = Netns::new();
    ns.exec(&["nft", "add", "table", "inet", TABLE]);
    // ~6,000 ACKs: far past what the default receive buffer (~200 KiB) holds, which made
    // the kernel drop ACKs and the commit fail with ENOBUFS.
    const SETS: usize = 6000;
    let committed = ns.run(|| {
        let mut b = TableBatch::new(TABLE);
        let spec = SetSpec {
            key: KeyType::Ipv4,
            interval: false,
            verdict_map: false,
            counter: false,
        };
        for i in 0..SETS {
            b.add_set(&format!("s{i}"), &spec);
        }
        b.commit().map_err(|e| e.to_string())
    });
    assert_eq!(committed, Ok(()));
    let sets = objects(&ns.nft_json(TABLE), "set").len();
    assert_eq!(sets, SETS, "every set is in the kernel");
}
