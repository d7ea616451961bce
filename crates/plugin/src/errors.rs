//! Kernel failures as CNI errors: the message names what was being done to which object.

use weft_cni::{CniError, Code};

pub fn kernel(what: &str, e: weft_net::Error) -> CniError {
    CniError::new(Code::Internal, format!("{what}: {e}"))
}

pub fn nft(what: &str, e: weft_nft::Error) -> CniError {
    CniError::new(Code::Internal, format!("{what}: {e}"))
}
