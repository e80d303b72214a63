use super::glob;

#[test]
fn globs_match_runs() {
    assert!(glob("*", ""));
    assert!(glob("al*", "alice"));
    assert!(glob("*ic*", "alice"));
    assert!(glob("bob", "bob"));
    assert!(!glob("bob", "bobby"));
    assert!(!glob("a*z", "alice"));
}
