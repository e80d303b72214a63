use super::*;

#[test]
fn tokens_are_taken_once_and_expire() {
    let tokens = OneTimeTokens::default();
    let issued = Issued {
        client_id: "c".into(),
        context: "x".into(),
    };
    let a = tokens
        .issue(issued.clone(), Duration::from_secs(60))
        .unwrap();
    let b = tokens
        .issue(issued.clone(), Duration::from_secs(60))
        .unwrap();
    assert_ne!(a, b);
    assert_eq!(tokens.redeem(&a), Some(issued.clone()));
    assert_eq!(tokens.redeem(&a), None, "a token is taken once");
    let gone = tokens.issue(issued, Duration::ZERO).unwrap();
    assert_eq!(tokens.redeem(&gone), None, "an expired token is refused");
    assert!(tokens.redeem(&b).is_some());
}
