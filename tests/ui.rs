//! Compile-time diagnostics of `separable_conv!` and `separable_net!` (`net_*.rs`): each file
//! under `tests/ui/` makes one mistake and its `.stderr` records the message and the tokens it
//! underlines. Files under `tests/ui/pass/` exercise accepted spellings that must keep compiling.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
    cases.pass("tests/ui/pass/*.rs");
}
