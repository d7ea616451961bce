//! Test scaffolding: weft-testkit's throw-away namespaces (`wtn…`), which the tests also open
//! as weft-net's own [`NetNs`], the type under test.
#![allow(dead_code)]

use std::ops::Deref;

use weft_net::NetNs;

/// A named netns (`wtn<pid>x<n>`, lo up) that is deleted when dropped, also on panic.
pub struct TestNs(weft_testkit::TestNs);

impl TestNs {
    pub fn new() -> TestNs {
        TestNs(weft_testkit::TestNs::new("wtn"))
    }

    pub fn open(&self) -> NetNs {
        NetNs::open(&self.path()).expect("open test netns")
    }
}

impl Deref for TestNs {
    type Target = weft_testkit::TestNs;

    fn deref(&self) -> &weft_testkit::TestNs {
        &self.0
    }
}
