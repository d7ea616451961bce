//! Compiles `bpf/*.bpf.c` into BPF objects with Debian's clang (`-O2 -g -target bpf`,
//! headers from libbpf-dev and the kernel's UAPI headers), into OUT_DIR, where `lib.rs`
//! embeds them. BPF programs cannot be written in Rust on this toolchain (aya-ebpf needs
//! nightly and bpf-linker): ../shared/docs/ebpf.md.

use std::path::PathBuf;
use std::process::Command;

/// The programs in `bpf/`, each `<name>.bpf.c` → `$OUT_DIR/<name>.bpf.o`.
const PROGRAMS: &[&str] = &["datapath"];

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = std::env::var("WEFT_BPF_CLANG").unwrap_or_else(|_| "clang".into());
    println!("cargo:rerun-if-env-changed=WEFT_BPF_CLANG");
    // <linux/types.h> includes <asm/types.h>, which Debian keeps under the multiarch dir of
    // the host; `-target bpf` has no multiarch dir of its own.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        other => panic!("no Debian multiarch include dir known for target arch {other}"),
    };
    for name in PROGRAMS {
        let src = format!("bpf/{name}.bpf.c");
        println!("cargo:rerun-if-changed={src}");
        let obj = out.join(format!("{name}.bpf.o"));
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I/usr/include/{multiarch}"))
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {clang} (install clang and libbpf-dev: scripts/lib/deps.sh): {e}"
                )
            });
        assert!(status.success(), "{clang} failed on {src}");
    }
}
