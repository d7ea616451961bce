//! `weft-ipam`: the CNI IPAM plugin; the same code as `weft`, dispatched on its name.
fn main() {
    std::process::exit(weft_plugin::main_entry());
}
