//! `weft`: the CNI main plugin (and `weft-ipam` when installed under that name).
fn main() {
    std::process::exit(weft_plugin::main_entry());
}
