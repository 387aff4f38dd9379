use nimbus_core::data::{Filter, OrderBy};
use serde_json::json;

use super::*;
use crate::Database;

const STORE: StoreRef<'static> = StoreRef {
    app: "shop",
    name: "orders",
};

struct Fixture {
    _dir: tempfile::TempDir,
    docs: Docs,
    catalog: Catalog,
    info: StoreInfo,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let catalog = Catalog::open(db).unwrap();
    let info = catalog.create(StoreKind::Docs, STORE).unwrap();
    let docs = Docs::open(catalog.clone()).unwrap();
    Fixture {
        _dir: dir,
        docs,
        catalog,
        info,
    }
}

fn q(filter: Value) -> DocQuery {
    DocQuery {
        filter: Some(Filter::from_json(&filter).unwrap()),
        limit: Some(1000),
        ..DocQuery::default()
    }
}

fn order(keys: &[&str]) -> Vec<OrderBy> {
    keys.iter().map(|k| OrderBy::parse(k).unwrap()).collect()
}

async fn ids(docs: &Docs, query: DocQuery) -> Vec<String> {
    let page = docs.query(STORE, query).await.unwrap();
    page.documents.into_iter().map(|d| d.id).collect()
}

async fn put_all(docs: &Docs, items: &[(&str, Value)]) {
    for (id, body) in items {
        docs.put(STORE, id, body.clone(), None).await.unwrap();
    }
}

#[tokio::test]
async fn crud_with_revisions_and_conflicts() {
    let f = fixture();
    let d = &f.docs;
    assert_eq!(d.get(STORE, "a").await.unwrap(), None);
    let doc = d.put(STORE, "a", json!({"n": 1}), Some(0)).await.unwrap();
    assert_eq!((doc.rev, doc.body.clone()), (1, json!({"n": 1})));
    let err = d
        .put(STORE, "a", json!({"n": 2}), Some(0))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DataError::Conflict(m) if m.contains("revision 1")),
        "{err}"
    );
    let err = d
        .put(STORE, "a", json!({"n": 2}), Some(5))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DataError::Conflict(m) if m.contains("revision 1")),
        "{err}"
    );
    let doc = d.put(STORE, "a", json!({"n": 2}), Some(1)).await.unwrap();
    assert_eq!(doc.rev, 2);
    let doc = d.put(STORE, "a", json!({"n": 3}), None).await.unwrap();
    assert_eq!(doc.rev, 3);
    assert_eq!(d.get(STORE, "a").await.unwrap(), Some(doc));

    // Conditional writes of a missing document.
    let err = d.put(STORE, "b", json!({}), Some(1)).await.unwrap_err();
    assert!(matches!(err, DataError::Conflict(_)), "{err}");
    assert!(!d.delete(STORE, "b", None).await.unwrap());
    assert!(!d.delete(STORE, "b", Some(0)).await.unwrap());
    assert!(matches!(
        d.delete(STORE, "b", Some(2)).await,
        Err(DataError::Conflict(_))
    ));

    let err = d.delete(STORE, "a", Some(2)).await.unwrap_err();
    assert!(
        matches!(&err, DataError::Conflict(m) if m.contains("revision 3")),
        "{err}"
    );
    assert!(d.delete(STORE, "a", Some(3)).await.unwrap());
    assert_eq!(d.get(STORE, "a").await.unwrap(), None);
    // A re-created document starts again at 1.
    assert_eq!(d.put(STORE, "a", json!({}), None).await.unwrap().rev, 1);

    // Bad input.
    for body in [json!([1]), json!("x"), json!(null), json!(3)] {
        let err = d.put(STORE, "c", body, None).await.unwrap_err();
        assert!(matches!(err, DataError::Invalid(_)), "{err}");
    }
    for id in ["", "a/b", "x\ny", &"i".repeat(513)] {
        let err = d.put(STORE, id, json!({}), None).await.unwrap_err();
        assert!(matches!(err, DataError::Invalid(_)), "{id:?}: {err}");
    }
    let big = json!({"x": "y".repeat(limits::MAX_DOC_BYTES)});
    assert!(matches!(
        d.put(STORE, "c", big, None).await,
        Err(DataError::TooLarge(_))
    ));
    let missing = StoreRef::new("shop", "nope");
    assert!(matches!(
        d.get(missing, "a").await,
        Err(DataError::NoSuchStore { .. })
    ));
}

#[tokio::test]
async fn merge_patch() {
    let f = fixture();
    let d = &f.docs;
    let err = d
        .patch(STORE, "a", json!({"x": 1}), None)
        .await
        .unwrap_err();
    assert!(matches!(err, DataError::NotFound(_)), "{err}");
    d.put(
        STORE,
        "a",
        json!({"name": "A", "addr": {"city": "X", "zip": "1"}, "tags": [1]}),
        None,
    )
    .await
    .unwrap();
    let doc = d
        .patch(
            STORE,
            "a",
            json!({"addr": {"zip": null, "street": "S"}, "tags": [2], "name": null, "new": {"a": null, "b": 1}}),
            Some(1),
        )
        .await
        .unwrap();
    assert_eq!(doc.rev, 2);
    assert_eq!(
        doc.body,
        json!({"addr": {"city": "X", "street": "S"}, "tags": [2], "new": {"b": 1}})
    );
    assert_eq!(d.get(STORE, "a").await.unwrap().unwrap(), doc);
    let err = d
        .patch(STORE, "a", json!({"x": 1}), Some(1))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DataError::Conflict(m) if m.contains("revision 2")),
        "{err}"
    );
    for bad in [json!([1]), json!(null), json!("x")] {
        let err = d.patch(STORE, "a", bad, None).await.unwrap_err();
        assert!(matches!(err, DataError::Invalid(_)), "{err}");
    }
    assert_eq!(d.get(STORE, "a").await.unwrap().unwrap().rev, 2);
}

async fn operator_fixture() -> Fixture {
    let f = fixture();
    put_all(
        &f.docs,
        &[
            (
                "a",
                json!({"n": 1, "s": "apple", "b": true, "c": {"id": "x1", "k": 5}}),
            ),
            (
                "b",
                json!({"n": 2.5, "s": "apricot", "b": false, "c": {"id": "x2"}}),
            ),
            (
                "c",
                json!({"n": "1", "s": "Apple", "b": 1, "c": {"id": null}}),
            ),
            ("d", json!({"n": null, "s": ["apple"], "c": "x1"})),
            ("e", json!({"s": {"a": 1}, "n": 10, "b": null})),
            ("f", json!({"n": -3, "s": "{\"a\":1}", "c": {"id": "y"}})),
        ],
    )
    .await;
    f
}

#[tokio::test]
async fn every_operator() {
    let f = operator_fixture().await;
    let d = &f.docs;
    let cases = [
        // Equality is typed: 1 is not "1", not true; a string is not an array.
        (json!({"n": 1}), vec!["a"]),
        (json!({"n": "1"}), vec!["c"]),
        (json!({"n": 2.5}), vec!["b"]),
        (json!({"b": true}), vec!["a"]),
        (json!({"b": false}), vec!["b"]),
        (json!({"b": 1}), vec!["c"]),
        (json!({"s": "apple"}), vec!["a"]),
        (json!({"s": "{\"a\":1}"}), vec!["f"]),
        // eq null: JSON null only, not missing.
        (json!({"n": null}), vec!["d"]),
        (json!({"b": {"eq": null}}), vec!["e"]),
        // ne: "not eq", so missing and other types match.
        (json!({"n": {"ne": 1}}), vec!["b", "c", "d", "e", "f"]),
        (json!({"b": {"ne": true}}), vec!["b", "c", "d", "e", "f"]),
        (json!({"n": {"ne": null}}), vec!["a", "b", "c", "e", "f"]),
        // Ranges compare within a type.
        (json!({"n": {"gt": 1}}), vec!["b", "e"]),
        (json!({"n": {"ge": 1}}), vec!["a", "b", "e"]),
        (json!({"n": {"lt": 1}}), vec!["f"]),
        (json!({"n": {"le": 2.5}}), vec!["a", "b", "f"]),
        (json!({"n": {"gt": 0, "lt": 5}}), vec!["a", "b"]),
        // `{` sorts after letters.
        (json!({"s": {"lt": "apricot"}}), vec!["a", "c"]),
        (json!({"s": {"ge": "apple"}}), vec!["a", "b", "f"]),
        (json!({"b": {"gt": false}}), vec!["a"]),
        (json!({"b": {"le": true}}), vec!["a", "b"]),
        // in, with mixed types.
        (json!({"n": {"in": [1, "1", null]}}), vec!["a", "c", "d"]),
        (json!({"b": {"in": [true, 1]}}), vec!["a", "c"]),
        (json!({"b": {"in": [false, true]}}), vec!["a", "b"]),
        (json!({"n": {"in": []}}), vec![]),
        (json!({"n": {"in": [null]}}), vec!["d"]),
        // exists.
        (json!({"b": {"exists": true}}), vec!["a", "b", "c", "e"]),
        (json!({"b": {"exists": false}}), vec!["d", "f"]),
        // prefix: case-sensitive, strings only.
        (json!({"s": {"prefix": "ap"}}), vec!["a", "b"]),
        (json!({"s": {"prefix": "App"}}), vec!["c"]),
        (json!({"s": {"prefix": ""}}), vec!["a", "b", "c", "f"]),
        (json!({"s": {"prefix": "apple"}}), vec!["a"]),
        // Nested paths.
        (json!({"c.id": "x1"}), vec!["a"]),
        (json!({"c.id": {"prefix": "x"}}), vec!["a", "b"]),
        (json!({"c.id": {"exists": true}}), vec!["a", "b", "c", "f"]),
        (json!({"c.id": null}), vec!["c"]),
        (json!({"c.k": {"ge": 5}}), vec!["a"]),
        (json!({"c": "x1"}), vec!["d"]),
        // and / or.
        (json!({"s": {"prefix": "a"}, "n": {"gt": 2}}), vec!["b"]),
        (json!({"$or": [{"n": 1}, {"c.id": "y"}]}), vec!["a", "f"]),
        (
            json!({"$or": [{"n": {"lt": 0}}, {"$and": [{"b": {"exists": true}}, {"s": {"prefix": "a"}}]}]}),
            vec!["a", "b", "f"],
        ),
        (json!({"$and": []}), vec!["a", "b", "c", "d", "e", "f"]),
        (json!({"$or": []}), vec![]),
    ];
    for (filter, want) in cases {
        assert_eq!(ids(d, q(filter.clone())).await, want, "{filter}");
    }
    // The same answers with every path indexed.
    f.docs
        .apply_indexes(
            &f.info,
            &["n".into(), "s".into(), "b".into(), "c.id".into()],
        )
        .await
        .unwrap();
    assert_eq!(ids(d, q(json!({"n": {"gt": 1}}))).await, ["b", "e"]);
    assert_eq!(ids(d, q(json!({"s": {"prefix": "ap"}}))).await, ["a", "b"]);
    assert_eq!(ids(d, q(json!({"n": {"ne": 1}}))).await.len(), 5);
    assert_eq!(ids(d, q(json!({"b": {"exists": false}}))).await, ["d", "f"]);

    let err = d
        .query(STORE, q(json!({"n": {"lt": null}})))
        .await
        .unwrap_err();
    assert!(matches!(err, DataError::Invalid(_)), "{err}");
}

#[tokio::test]
async fn order_by_with_ties() {
    let f = operator_fixture().await;
    let d = &f.docs;
    put_all(d, &[("g", json!({"n": 1})), ("h", json!({"n": 2.5}))]).await;
    let sorted = |keys: &[&str]| DocQuery {
        order_by: order(keys),
        ..DocQuery::default()
    };
    // Missing and null first, then numbers, then strings; ties by id.
    assert_eq!(
        ids(d, sorted(&["n"])).await,
        ["d", "f", "a", "g", "b", "h", "e", "c"]
    );
    // Descending is the exact reverse, ties included.
    assert_eq!(
        ids(d, sorted(&["-n"])).await,
        ["c", "e", "h", "b", "g", "a", "f", "d"]
    );
    assert_eq!(
        ids(d, DocQuery::default()).await,
        ["a", "b", "c", "d", "e", "f", "g", "h"]
    );
    // Several keys, mixed directions.
    put_all(
        d,
        &[
            ("p1", json!({"g": 1, "t": 5})),
            ("p2", json!({"g": 1, "t": 7})),
            ("p3", json!({"g": 2, "t": 7})),
            ("p4", json!({"g": 2, "t": 7})),
        ],
    )
    .await;
    let mut query = sorted(&["g", "-t"]);
    query.filter = Some(Filter::from_json(&json!({"g": {"exists": true}})).unwrap());
    assert_eq!(ids(d, query).await, ["p2", "p1", "p4", "p3"]);
    let mut query = sorted(&["-g", "t"]);
    query.filter = Some(Filter::from_json(&json!({"g": {"exists": true}})).unwrap());
    assert_eq!(ids(d, query).await, ["p3", "p4", "p1", "p2"]);
}

#[tokio::test]
async fn pages_return_every_document_once() {
    let f = fixture();
    let d = &f.docs;
    let mut items = Vec::new();
    for i in 0..120u32 {
        let v = match i % 7 {
            0 => json!(null),
            1 => json!(format!("s{}", i % 5)),
            2 => json!(i % 4),
            3 => json!((i % 3) as f64 + 0.5),
            4 => json!(i % 2 == 0),
            5 => json!({"o": i % 2}),
            _ => json!(i % 4),
        };
        let mut body = json!({"v": v, "w": i % 3, "i": i});
        if i % 11 == 0 {
            body.as_object_mut().unwrap().remove("v");
        }
        items.push((format!("doc{:03}", (i * 37) % 120), body));
    }
    for (id, body) in &items {
        d.put(STORE, id, body.clone(), None).await.unwrap();
    }
    for indexed in [false, true] {
        if indexed {
            d.apply_indexes(&f.info, &["v".into(), "w".into()])
                .await
                .unwrap();
        }
        for keys in [
            &[][..],
            &["v"],
            &["-v"],
            &["w", "-v"],
            &["-w", "v"],
            &["-v", "-w"],
            &["v", "w"],
        ] {
            for filter in [None, Some(json!({"w": {"in": [0, 2]}}))] {
                let base = DocQuery {
                    filter: filter.as_ref().map(|f| Filter::from_json(f).unwrap()),
                    order_by: order(keys),
                    limit: Some(1000),
                    cursor: None,
                };
                let all = ids(d, base.clone()).await;
                let mut paged = Vec::new();
                let mut query = DocQuery {
                    limit: Some(7),
                    ..base.clone()
                };
                loop {
                    let page = d.query(STORE, query.clone()).await.unwrap();
                    assert!(page.documents.len() <= 7);
                    paged.extend(page.documents.into_iter().map(|doc| doc.id));
                    match page.cursor {
                        Some(c) => query.cursor = Some(c),
                        None => break,
                    }
                }
                assert_eq!(paged, all, "{keys:?} {filter:?} indexed={indexed}");
                let mut unique = paged.clone();
                unique.sort();
                unique.dedup();
                assert_eq!(unique.len(), paged.len());
                if filter.is_none() {
                    assert_eq!(paged.len(), 120);
                }
            }
        }
    }

    // A cursor only continues its own query.
    let first = d
        .query(
            STORE,
            DocQuery {
                order_by: order(&["v"]),
                limit: Some(5),
                ..DocQuery::default()
            },
        )
        .await
        .unwrap();
    let cursor = first.cursor.unwrap();
    for other in [
        DocQuery {
            order_by: order(&["-v"]),
            ..DocQuery::default()
        },
        DocQuery {
            order_by: order(&["v"]),
            filter: Some(Filter::from_json(&json!({"w": 1})).unwrap()),
            ..DocQuery::default()
        },
    ] {
        let err = d
            .query(
                STORE,
                DocQuery {
                    cursor: Some(cursor.clone()),
                    ..other
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, DataError::Invalid(_)), "{err}");
    }
    let err = d
        .query(
            STORE,
            DocQuery {
                cursor: Some("garbage".into()),
                ..DocQuery::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, DataError::Invalid(_)), "{err}");
    for limit in [0, limits::MAX_PAGE + 1] {
        let query = DocQuery {
            limit: Some(limit),
            ..DocQuery::default()
        };
        assert!(matches!(
            d.query(STORE, query).await,
            Err(DataError::Invalid(_))
        ));
    }
    let page = d.query(STORE, DocQuery::default()).await.unwrap();
    assert_eq!(page.documents.len(), query::DEFAULT_LIMIT);
    assert!(page.cursor.is_some());
}

async fn plan(d: &Docs, query: DocQuery) -> QueryPlan {
    d.explain(STORE, query).await.unwrap()
}

#[tokio::test]
async fn explain_reports_the_index() {
    let f = fixture();
    let d = &f.docs;
    for i in 0..50 {
        d.put(
            STORE,
            &format!("d{i}"),
            json!({"customer": {"id": format!("c{}", i % 5)}, "status": "new", "total": i}),
            None,
        )
        .await
        .unwrap();
    }
    d.apply_indexes(&f.info, &["customer.id".into(), "total".into()])
        .await
        .unwrap();
    // Equality on an indexed path, in the default id order.
    let p = plan(d, q(json!({"customer.id": "c1"}))).await;
    assert_eq!(p.indexes_used, ["customer.id"], "{p:?}");
    assert!(p.steps.iter().all(|s| !s.contains("TEMP B-TREE")), "{p:?}");
    // Unindexed: a scan of the store, no declared index.
    let p = plan(d, q(json!({"status": "new"}))).await;
    assert!(p.indexes_used.is_empty(), "{p:?}");
    assert!(!p.steps.is_empty());
    // Range, in and prefix on indexed paths.
    for filter in [
        json!({"total": {"gt": 10, "le": 20}}),
        json!({"customer.id": {"in": ["c1", "c2"]}}),
        json!({"customer.id": {"prefix": "c"}}),
    ] {
        let p = plan(d, q(filter.clone())).await;
        assert!(!p.indexes_used.is_empty(), "{filter}: {p:?}");
    }
    // Sorting by an indexed path needs no sort step, also when paging on.
    let sorted = DocQuery {
        order_by: order(&["total"]),
        limit: Some(5),
        ..DocQuery::default()
    };
    let p = plan(d, sorted.clone()).await;
    assert_eq!(p.indexes_used, ["total"], "{p:?}");
    let page = d.query(STORE, sorted.clone()).await.unwrap();
    let next = DocQuery {
        cursor: page.cursor,
        ..sorted
    };
    let p = plan(d, next).await;
    assert_eq!(p.indexes_used, ["total"], "{p:?}");
    // Dropping the index goes back to a scan.
    d.apply_indexes(&f.info, &["total".into()]).await.unwrap();
    let p = plan(d, q(json!({"customer.id": "c1"}))).await;
    assert!(p.indexes_used.is_empty(), "{p:?}");
}

async fn schema_indexes(f: &Fixture) -> Vec<String> {
    let id = f.info.id;
    f.catalog
        .db()
        .call(move |conn| Ok(index_names(conn, id)?))
        .await
        .unwrap()
}

#[tokio::test]
async fn apply_indexes_adds_and_removes() {
    let f = fixture();
    let d = &f.docs;
    d.put(STORE, "a", json!({"x": 1}), None).await.unwrap();
    d.apply_indexes(&f.info, &["x".into(), "y.z".into(), "x".into()])
        .await
        .unwrap();
    let mut want = vec![
        query::index_name(f.info.id, &FieldPath::parse("x").unwrap()),
        query::index_name(f.info.id, &FieldPath::parse("y.z").unwrap()),
    ];
    want.sort();
    let mut have = schema_indexes(&f).await;
    have.sort();
    assert_eq!(have, want);
    // Idempotent.
    d.apply_indexes(&f.info, &["y.z".into(), "x".into()])
        .await
        .unwrap();
    assert_eq!(schema_indexes(&f).await.len(), 2);
    d.apply_indexes(&f.info, &["y.z".into(), "w".into()])
        .await
        .unwrap();
    let have = schema_indexes(&f).await;
    assert_eq!(have.len(), 2);
    assert!(!have.contains(&want[0]) || !want[0].contains("_x_"));
    assert!(have.contains(&query::index_name(
        f.info.id,
        &FieldPath::parse("w").unwrap()
    )));
    d.apply_indexes(&f.info, &[]).await.unwrap();
    assert!(schema_indexes(&f).await.is_empty());
    let err = d
        .apply_indexes(&f.info, &["a..b".into()])
        .await
        .unwrap_err();
    assert!(matches!(err, DataError::Invalid(_)), "{err}");
    // Other stores' indexes are not touched.
    let other = f
        .catalog
        .create(StoreKind::Docs, StoreRef::new("shop", "other"))
        .unwrap();
    d.apply_indexes(&other, &["x".into()]).await.unwrap();
    d.apply_indexes(&f.info, &["x".into()]).await.unwrap();
    d.apply_indexes(&f.info, &[]).await.unwrap();
    let id = other.id;
    let left = f
        .catalog
        .db()
        .call(move |conn| Ok(index_names(conn, id)?))
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
}

#[tokio::test]
async fn drop_store_deletes_everything() {
    let f = fixture();
    let d = &f.docs;
    let other_ref = StoreRef::new("shop", "other");
    let other = f.catalog.create(StoreKind::Docs, other_ref).unwrap();
    d.apply_indexes(&f.info, &["x".into()]).await.unwrap();
    for i in 0..10 {
        d.put(STORE, &format!("d{i}"), json!({"x": i}), None)
            .await
            .unwrap();
    }
    d.put(other_ref, "keep", json!({"x": 1}), None)
        .await
        .unwrap();
    let (count, bytes) = d.stats(&f.info).await.unwrap();
    assert_eq!(count, 10);
    assert_eq!(bytes, 10 * json!({"x": 1}).to_string().len() as u64);

    d.drop_store(&f.info).await.unwrap();
    assert!(matches!(
        d.get(STORE, "d1").await,
        Err(DataError::NoSuchStore { .. })
    ));
    assert!(schema_indexes(&f).await.is_empty());
    assert_eq!(d.stats(&f.info).await.unwrap(), (0, 0));
    assert!(f.catalog.changes(&f.info, 0, 100).await.unwrap().is_empty());
    // Re-created, it is empty; the other store kept its document.
    f.catalog.create(StoreKind::Docs, STORE).unwrap();
    assert_eq!(d.get(STORE, "d1").await.unwrap(), None);
    assert!(d.get(other_ref, "keep").await.unwrap().is_some());
    assert_eq!(d.stats(&other).await.unwrap().0, 1);
}

#[tokio::test]
async fn change_events_in_order() {
    let f = fixture();
    let d = &f.docs;
    d.put(STORE, "a", json!({"n": 1}), None).await.unwrap();
    d.put(STORE, "a", json!({"n": 2}), None).await.unwrap();
    d.patch(STORE, "a", json!({"m": true}), None).await.unwrap();
    assert!(!d.delete(STORE, "missing", None).await.unwrap());
    let _ = d.put(STORE, "a", json!({}), Some(9)).await.unwrap_err();
    assert!(d.delete(STORE, "a", None).await.unwrap());
    let changes = f.catalog.changes(&f.info, 0, 100).await.unwrap();
    let seen: Vec<(String, Option<String>, Value)> = changes
        .iter()
        .map(|c| {
            let data = c
                .event
                .data
                .as_ref()
                .map(|b| serde_json::from_slice(b).unwrap());
            (
                c.event.ty.clone(),
                c.event.subject.clone(),
                data.unwrap_or(Value::Null),
            )
        })
        .collect();
    let a = Some("a".to_string());
    assert_eq!(
        seen,
        [
            (
                CREATED.into(),
                a.clone(),
                json!({"id": "a", "rev": 1, "document": {"n": 1}})
            ),
            (
                UPDATED.into(),
                a.clone(),
                json!({"id": "a", "rev": 2, "document": {"n": 2}})
            ),
            (
                UPDATED.into(),
                a.clone(),
                json!({"id": "a", "rev": 3, "document": {"n": 2, "m": true}})
            ),
            (DELETED.into(), a, json!({"id": "a", "rev": 3})),
        ]
    );
    assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
}
