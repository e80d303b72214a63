//! The JSON view and JSON paths over plain yrs documents.

use serde_json::json;
use yrs::{Array, Doc, Map, ReadTxn, Text, Transact, WriteTxn};

use super::json_view::{parse, render, value_at, view, write, Step};

fn key(k: &str) -> Step {
    Step::Key(k.to_owned())
}

#[test]
fn paths_parse_in_every_spelling_and_refuse_broken_ones() {
    let expected = vec![key("map"), key("a b"), Step::Index(2), key("c")];
    for path in [
        "$.map['a b'][2].c",
        "map[\"a b\"][2].c",
        " $.map[ 'a b' ][2].c ",
    ] {
        let parsed = parse(path).expect(path);
        assert_eq!(parsed, expected, "{path}");
    }
    assert_eq!(render(&expected), "$.map.a b[2].c");
    assert_eq!(parse("$").expect("root"), Vec::<Step>::new());
    for bad in ["$.", "$..a", "$.a[", "$.a[x]", "$.a]"] {
        let failure = parse(bad).expect_err(bad);
        assert_eq!(failure.code(), crate::call::Code::InvalidArgument, "{bad}");
    }
}

#[test]
fn writes_make_nested_types_and_the_view_reads_them_back() {
    let doc = Doc::new();
    let mut txn = doc.transact_mut();
    write(
        &mut txn,
        &parse("$.m.a.b").unwrap(),
        Some(json!({"x": [1, 2.5, "s", null]})),
    )
    .unwrap();
    write(
        &mut txn,
        &parse("$.list").unwrap(),
        Some(json!([1, {"k": true}])),
    )
    .unwrap();
    write(&mut txn, &parse("$.list[1].k").unwrap(), Some(json!(false))).unwrap();
    write(&mut txn, &parse("$.list[2]").unwrap(), Some(json!("end"))).unwrap();
    write(&mut txn, &parse("$.text").unwrap(), Some(json!("hello"))).unwrap();
    assert_eq!(
        view(&txn),
        json!({
            "list": [1, {"k": false}, "end"],
            "m": {"a": {"b": {"x": [1, 2.5, "s", null]}}},
            "text": "hello",
        })
    );
    assert_eq!(
        value_at(&txn, &parse("$.m.a.b.x[1]").unwrap()),
        Some(json!(2.5))
    );
    assert_eq!(value_at(&txn, &parse("$.nothing").unwrap()), None);
    // An empty value removes; a root keeps its shape.
    write(&mut txn, &parse("$.list[0]").unwrap(), None).unwrap();
    write(&mut txn, &parse("$.m.a").unwrap(), None).unwrap();
    assert_eq!(
        value_at(&txn, &parse("$.list").unwrap()),
        Some(json!([{"k": false}, "end"]))
    );
    assert_eq!(value_at(&txn, &parse("$.m").unwrap()), Some(json!({})));
    for (path, value) in [
        ("$.text", json!({"a": 1})),
        ("$.m", json!(3)),
        ("$.list[9]", json!(1)),
    ] {
        let failure = write(&mut txn, &parse(path).unwrap(), Some(value)).expect_err(path);
        assert_eq!(
            failure.code(),
            crate::call::Code::FailedPrecondition,
            "{path}"
        );
    }
}

#[test]
fn roots_known_only_from_updates_are_read_by_what_they_hold() {
    let source = Doc::new();
    {
        let mut txn = source.transact_mut();
        txn.get_or_insert_map("m").insert(&mut txn, "k", "v");
        let t = txn.get_or_insert_text("t");
        t.insert(&mut txn, 0, "text");
        txn.get_or_insert_array("a").push_back(&mut txn, 1);
    }
    let update = source
        .transact()
        .encode_state_as_update_v2(&yrs::StateVector::default());
    let server = Doc::new();
    let mut txn = server.transact_mut();
    txn.apply_update(super::document::decode_update(&update).unwrap())
        .unwrap();
    assert_eq!(view(&txn), json!({"a": [1], "m": {"k": "v"}, "t": "text"}));
}

#[test]
fn an_emptied_root_of_unknown_type_takes_any_shape() {
    let source = Doc::new();
    {
        let mut txn = source.transact_mut();
        let list = txn.get_or_insert_array("r");
        list.push_back(&mut txn, 1);
        list.remove(&mut txn, 0);
    }
    let update = source
        .transact()
        .encode_state_as_update_v2(&yrs::StateVector::default());
    let server = Doc::new();
    let mut txn = server.transact_mut();
    txn.apply_update(super::document::decode_update(&update).unwrap())
        .unwrap();
    write(&mut txn, &parse("$.r.k").unwrap(), Some(json!(1))).unwrap();
    assert_eq!(
        value_at(&txn, &parse("$.r").unwrap()),
        Some(json!({"k": 1}))
    );
}
