//! End-to-end tests of the bucket backend, through the `BlobStore` port as its
//! callers use it, plus a look at the files on disk.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use md5::{Digest, Md5};
use nimbus_core::app::StoreKind;
use nimbus_core::data::{
    BlobStore, ByteRange, DataError, ListObjects, PutOptions, StoreRef, limits,
};
use nimbus_core::ports::{Body, BoxError};
use serde_json::Value;
use tempfile::TempDir;

use super::{Blobs, files};
use crate::{Catalog, Database, StoreInfo};

const MEDIA: StoreRef<'static> = StoreRef {
    app: "shop",
    name: "media",
};
const BACKUP: StoreRef<'static> = StoreRef {
    app: "shop",
    name: "backup",
};

struct Fixture {
    dir: TempDir,
    catalog: Catalog,
    blobs: Blobs,
    media: StoreInfo,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(Database::open(dir.path()).unwrap()).unwrap();
        let media = catalog.create(StoreKind::Buckets, MEDIA).unwrap();
        let blobs = Blobs::open(catalog.clone(), dir.path().join("blobs")).unwrap();
        Self {
            dir,
            catalog,
            blobs,
            media,
        }
    }

    fn reopen(&mut self) {
        self.blobs = Blobs::open(self.catalog.clone(), self.root()).unwrap();
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("blobs")
    }

    /// Every file under the store's directory.
    fn files(&self, store: &StoreInfo) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.root().join(store.id.to_string()), &mut out);
        out.sort();
        out
    }

    async fn put(&self, key: &str, bytes: &[u8]) -> nimbus_core::data::ObjectMeta {
        self.blobs
            .put(MEDIA, key, PutOptions::default(), body(&[bytes]))
            .await
            .unwrap()
    }

    async fn read(&self, store: StoreRef<'_>, key: &str) -> Option<Vec<u8>> {
        let read = self.blobs.get(store, key, None).await.unwrap()?;
        Some(collect(read.body).await)
    }

    async fn events(&self, store: &StoreInfo) -> Vec<(String, String, Value)> {
        self.catalog
            .changes(store, 0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|c| {
                let data = serde_json::from_slice(&c.event.data.unwrap()).unwrap();
                (c.event.ty, c.event.subject.unwrap(), data)
            })
            .collect()
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn body(chunks: &[&[u8]]) -> Body {
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
        .iter()
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    StreamBody::new(futures::stream::iter(frames)).boxed_unsync()
}

async fn collect(body: Body) -> Vec<u8> {
    body.collect().await.unwrap().to_bytes().to_vec()
}

fn md5(bytes: &[u8]) -> [u8; 16] {
    Md5::digest(bytes).into()
}

#[tokio::test]
async fn put_get_roundtrip_with_many_frames() {
    let f = Fixture::new();
    // Larger than one read chunk (512 KiB), so the body streams in several frames.
    let big: Vec<u8> = (0..1_200_000u32).map(|i| (i % 251) as u8).collect();
    let mut options = PutOptions {
        content_type: Some("image/png".into()),
        ..Default::default()
    };
    options.metadata.insert("owner".into(), "ada".into());
    let meta = f
        .blobs
        .put(
            MEDIA,
            "img/a.png",
            options,
            body(&[b"head-", &big, b"-tail"]),
        )
        .await
        .unwrap();
    let mut all = b"head-".to_vec();
    all.extend_from_slice(&big);
    all.extend_from_slice(b"-tail");
    assert_eq!(meta.size, all.len() as u64);
    assert_eq!(meta.etag, hex::encode(md5(&all)));
    assert_eq!(meta.content_type.as_deref(), Some("image/png"));

    let read = f
        .blobs
        .get(MEDIA, "img/a.png", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.meta, meta);
    assert_eq!(read.range, None);
    // Streams in chunks rather than as one buffer.
    let mut body = read.body;
    let mut frames = 0;
    let mut got = Vec::new();
    while let Some(frame) = body.frame().await {
        got.extend_from_slice(&frame.unwrap().into_data().unwrap());
        frames += 1;
    }
    assert_eq!(got, all);
    assert!(frames > 1, "{frames} frames");

    assert_eq!(
        f.blobs.head(MEDIA, "img/a.png").await.unwrap(),
        Some(meta.clone())
    );
    assert!(f.blobs.get(MEDIA, "missing", None).await.unwrap().is_none());
    assert_eq!(
        f.blobs.stats(&f.media).await.unwrap(),
        (1, all.len() as u64)
    );

    // An empty object is an object.
    let empty = f.put("empty", b"").await;
    assert_eq!(empty.size, 0);
    assert_eq!(f.read(MEDIA, "empty").await.unwrap(), b"");
}

#[tokio::test]
async fn range_reads() {
    let f = &Fixture::new();
    let bytes: Vec<u8> = (0..100u8).collect();
    f.put("r", &bytes).await;
    let read = |range| async move {
        let r = f.blobs.get(MEDIA, "r", Some(range)).await?.unwrap();
        Ok::<_, DataError>((r.range.unwrap(), collect(r.body).await))
    };
    let (range, got) = read(ByteRange::From {
        start: 10,
        end: Some(19),
    })
    .await
    .unwrap();
    assert_eq!((range, got), ((10, 19), bytes[10..20].to_vec()));
    let (range, got) = read(ByteRange::Suffix(5)).await.unwrap();
    assert_eq!((range, got), ((95, 99), bytes[95..].to_vec()));
    let (range, got) = read(ByteRange::From {
        start: 90,
        end: Some(1000),
    })
    .await
    .unwrap();
    assert_eq!((range, got), ((90, 99), bytes[90..].to_vec()));
    assert!(matches!(
        read(ByteRange::From {
            start: 100,
            end: None
        })
        .await,
        Err(DataError::Range(_))
    ));
}

#[tokio::test]
async fn content_md5_mismatch_stores_nothing() {
    let f = Fixture::new();
    let options = PutOptions {
        content_md5: Some(md5(b"other")),
        ..Default::default()
    };
    let err = f
        .blobs
        .put(MEDIA, "k", options, body(&[b"hello"]))
        .await
        .unwrap_err();
    assert!(matches!(err, DataError::BadDigest(_)), "{err}");
    assert_eq!(f.blobs.head(MEDIA, "k").await.unwrap(), None);
    assert!(f.events(&f.media).await.is_empty());
    assert!(f.files(&f.media).is_empty(), "{:?}", f.files(&f.media));

    let options = PutOptions {
        content_md5: Some(md5(b"hello")),
        ..Default::default()
    };
    f.blobs
        .put(MEDIA, "k", options, body(&[b"hel", b"lo"]))
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_input_is_rejected_not_stored() {
    let f = Fixture::new();
    for key in ["", "../x", "/abs", "a\nb"] {
        let err = f
            .blobs
            .put(MEDIA, key, PutOptions::default(), body(&[b"x"]))
            .await
            .unwrap_err();
        assert!(matches!(err, DataError::Invalid(_)), "{key:?}: {err}");
    }
    let mut options = PutOptions::default();
    options
        .metadata
        .insert("big".into(), "x".repeat(limits::MAX_METADATA_BYTES));
    let err = f
        .blobs
        .put(MEDIA, "k", options, body(&[b"x"]))
        .await
        .unwrap_err();
    assert!(matches!(err, DataError::TooLarge(_)), "{err}");
    let err = f
        .blobs
        .put(
            StoreRef::new("shop", "nope"),
            "k",
            PutOptions::default(),
            body(&[b"x"]),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, DataError::NoSuchStore { .. }), "{err}");

    // The size limit holds while streaming, and leaves no file behind.
    let temp = f.root().join("limit-test");
    let err = files::receive(body(&[b"0123456789", b"0123456789"]), temp.clone(), 15)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, DataError::TooLarge(_)), "{err}");
    assert!(!temp.exists());

    // A body that fails midway (client gone) stores nothing either.
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
        Ok(Frame::data(Bytes::from_static(b"start"))),
        Err("connection reset".into()),
    ];
    let broken = StreamBody::new(futures::stream::iter(frames)).boxed_unsync();
    let err = f
        .blobs
        .put(MEDIA, "k", PutOptions::default(), broken)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("connection reset"), "{err}");
    assert!(f.files(&f.media).is_empty());
    assert!(f.events(&f.media).await.is_empty());
}

#[tokio::test]
async fn overwrite_removes_the_old_file() {
    let f = Fixture::new();
    f.put("k", b"one").await;
    let before = f.files(&f.media);
    assert_eq!(before.len(), 1);
    let meta = f.put("k", b"two!").await;
    let after = f.files(&f.media);
    assert_eq!(after.len(), 1);
    assert_ne!(before, after);
    assert_eq!(f.read(MEDIA, "k").await.unwrap(), b"two!");
    assert_eq!(meta.size, 4);
    assert_eq!(f.blobs.stats(&f.media).await.unwrap(), (1, 4));
}

#[tokio::test]
async fn list_with_prefix_delimiter_and_pages() {
    let f = &Fixture::new();
    let keys = [
        "a.txt",
        "photos/2023/a.jpg",
        "photos/2023/b.jpg",
        "photos/2024/c.jpg",
        "photos/x.jpg",
        "photos0",
        "videos/v.mp4",
        "z",
    ];
    for key in keys.iter().rev() {
        f.put(key, key.as_bytes()).await;
    }
    let list = |prefix: &str, delimiter: Option<&str>, cursor: Option<String>, limit| {
        let request = ListObjects {
            prefix: prefix.into(),
            delimiter: delimiter.map(Into::into),
            cursor,
            limit,
        };
        async move { f.blobs.list(MEDIA, request).await.unwrap() }
    };
    let names = |page: &nimbus_core::data::ObjectPage| -> Vec<String> {
        page.objects.iter().map(|o| o.key.clone()).collect()
    };

    let page = list("photos/", Some("/"), None, None).await;
    assert_eq!(names(&page), ["photos/x.jpg"]);
    assert_eq!(page.common_prefixes, ["photos/2023/", "photos/2024/"]);
    assert_eq!(page.cursor, None);
    assert_eq!(page.objects[0].size, "photos/x.jpg".len() as u64);

    let page = list("", Some("/"), None, None).await;
    assert_eq!(names(&page), ["a.txt", "photos0", "z"]);
    assert_eq!(page.common_prefixes, ["photos/", "videos/"]);

    let page = list("photos/2023/", None, None, None).await;
    assert_eq!(names(&page), ["photos/2023/a.jpg", "photos/2023/b.jpg"]);

    // Pages of two with roll-up: a.txt photos/ | photos0 videos/ | z
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = list("", Some("/"), cursor, Some(2)).await;
        pages += 1;
        seen.extend(names(&page));
        seen.extend(page.common_prefixes.clone());
        cursor = page.cursor;
        if cursor.is_none() {
            break;
        }
    }
    seen.sort();
    assert_eq!(seen, ["a.txt", "photos/", "photos0", "videos/", "z"]);
    assert_eq!(pages, 3);

    // Without a delimiter, pages of three walk every key once, in byte order.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = list("", None, cursor, Some(3)).await;
        assert!(page.objects.len() <= 3);
        seen.extend(names(&page));
        cursor = page.cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, keys);

    // An exact fit ends with no cursor; a zero limit still returns something.
    let page = list("photos/2023/", None, None, Some(2)).await;
    assert_eq!((page.objects.len(), page.cursor), (2, None));
    assert_eq!(list("", None, None, Some(0)).await.objects.len(), 1);
    assert!(
        list("nothing/", Some("/"), None, None)
            .await
            .objects
            .is_empty()
    );
}

#[tokio::test]
async fn multipart_complete_and_abort() {
    let f = &Fixture::new();
    let options = PutOptions {
        content_type: Some("video/mp4".into()),
        ..Default::default()
    };
    let upload = f
        .blobs
        .create_multipart(MEDIA, "movie.mp4", options)
        .await
        .unwrap();
    assert_eq!(upload.len(), 32);
    let part = |n: u32, bytes: &'static [u8]| {
        let upload = upload.clone();
        async move {
            f.blobs
                .upload_part(MEDIA, &upload, n, None, body(&[bytes]))
                .await
        }
    };
    let p2 = part(2, b"-second").await.unwrap();
    part(1, b"draft").await.unwrap();
    let p1 = part(1, b"first").await.unwrap(); // replaces the draft
    assert_eq!((p1.part_number, p1.size), (1, 5));
    assert_eq!(p1.etag, hex::encode(md5(b"first")));
    assert_eq!(f.files(&f.media).len(), 2);
    assert!(matches!(part(0, b"x").await, Err(DataError::Invalid(_))));

    let complete = |parts: Vec<(u32, String)>| {
        let upload = upload.clone();
        async move { f.blobs.complete_multipart(MEDIA, &upload, parts).await }
    };
    let err = complete(vec![(2, p2.etag.clone()), (1, p1.etag.clone())])
        .await
        .unwrap_err();
    assert!(matches!(err, DataError::Invalid(_)), "{err}");
    let err = complete(vec![(1, p1.etag.clone()), (2, "beef".into())])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("part 2"), "{err}");
    let err = complete(vec![(1, p1.etag.clone()), (3, p2.etag.clone())])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("part 3"), "{err}");

    let meta = complete(vec![(1, format!("\"{}\"", p1.etag)), (2, p2.etag.clone())])
        .await
        .unwrap();
    let mut binary = md5(b"first").to_vec();
    binary.extend_from_slice(&md5(b"-second"));
    assert_eq!(meta.etag, format!("{}-2", hex::encode(md5(&binary))));
    assert_eq!(meta.size, 12);
    assert_eq!(meta.content_type.as_deref(), Some("video/mp4"));
    assert_eq!(f.read(MEDIA, "movie.mp4").await.unwrap(), b"first-second");
    // Only the object's file is left; the upload is gone.
    assert_eq!(f.files(&f.media).len(), 1);
    assert!(matches!(
        complete(vec![(1, p1.etag.clone())]).await,
        Err(DataError::NotFound(_))
    ));
    let events = f.events(&f.media).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].2["etag"], meta.etag);

    // Abort removes the parts.
    let upload = f
        .blobs
        .create_multipart(MEDIA, "other", PutOptions::default())
        .await
        .unwrap();
    f.blobs
        .upload_part(MEDIA, &upload, 1, None, body(&[b"abc"]))
        .await
        .unwrap();
    assert_eq!(f.files(&f.media).len(), 2);
    f.blobs.abort_multipart(MEDIA, &upload).await.unwrap();
    assert_eq!(f.files(&f.media).len(), 1);
    assert!(matches!(
        f.blobs.abort_multipart(MEDIA, &upload).await,
        Err(DataError::NotFound(_))
    ));
    assert!(matches!(
        f.blobs
            .upload_part(MEDIA, "nope", 1, None, body(&[b"abc"]))
            .await,
        Err(DataError::NotFound(_))
    ));
    assert_eq!(f.blobs.head(MEDIA, "other").await.unwrap(), None);
}

#[tokio::test]
async fn expired_uploads_are_removed() {
    let f = Fixture::new();
    let upload = f
        .blobs
        .create_multipart(MEDIA, "k", PutOptions::default())
        .await
        .unwrap();
    f.blobs
        .upload_part(MEDIA, &upload, 1, None, body(&[b"abc"]))
        .await
        .unwrap();
    assert_eq!(f.blobs.expire_uploads().await.unwrap(), 0);
    f.catalog
        .db()
        .call_blocking(|c| Ok(c.execute("UPDATE blob_uploads SET created_at = 0", [])?))
        .unwrap();
    assert_eq!(f.blobs.expire_uploads().await.unwrap(), 1);
    assert!(f.files(&f.media).is_empty());
    assert!(matches!(
        f.blobs.abort_multipart(MEDIA, &upload).await,
        Err(DataError::NotFound(_))
    ));
}

#[tokio::test]
async fn reopen_removes_orphans_and_keeps_objects() {
    let mut f = Fixture::new();
    f.put("kept", b"still here").await;
    let upload = f
        .blobs
        .create_multipart(MEDIA, "big", PutOptions::default())
        .await
        .unwrap();
    f.blobs
        .upload_part(MEDIA, &upload, 1, None, body(&[b"part"]))
        .await
        .unwrap();
    let live = f.files(&f.media);
    assert_eq!(live.len(), 2);

    // What a kill -9 leaves: a temp file mid-write, and a renamed file whose
    // row never committed.
    let store_dir = f.root().join(f.media.id.to_string());
    std::fs::write(store_dir.join(".tmp-deadbeef"), b"partial").unwrap();
    std::fs::create_dir_all(store_dir.join("ff")).unwrap();
    std::fs::write(store_dir.join("ff").join("ff00ff00"), b"orphan").unwrap();
    // And the files of a store whose drop committed before its files went.
    std::fs::create_dir_all(f.root().join("999").join("ab")).unwrap();
    std::fs::write(f.root().join("999").join("ab").join("abcd"), b"x").unwrap();

    f.reopen();
    assert_eq!(f.files(&f.media), live);
    assert!(!f.root().join("999").exists());
    assert_eq!(f.read(MEDIA, "kept").await.unwrap(), b"still here");
    let part = f
        .blobs
        .upload_part(MEDIA, &upload, 2, None, body(&[b"-two"]))
        .await
        .unwrap();
    assert_eq!(part.size, 4);
}

#[tokio::test]
async fn copy_within_and_across_buckets() {
    let f = Fixture::new();
    let backup = f.catalog.create(StoreKind::Buckets, BACKUP).unwrap();
    let mut options = PutOptions {
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    options.metadata.insert("k".into(), "v".into());
    let original = f
        .blobs
        .put(MEDIA, "a", options, body(&[b"copy me"]))
        .await
        .unwrap();

    let copied = f.blobs.copy(MEDIA, "a", BACKUP, "b").await.unwrap();
    assert_eq!(copied.key, "b");
    assert_eq!(
        (
            &copied.etag,
            copied.size,
            &copied.content_type,
            &copied.metadata
        ),
        (
            &original.etag,
            original.size,
            &original.content_type,
            &original.metadata
        )
    );
    f.blobs.copy(MEDIA, "a", MEDIA, "a2").await.unwrap();

    // The copies are independent of the source.
    assert!(f.blobs.delete(MEDIA, "a").await.unwrap());
    assert_eq!(f.read(BACKUP, "b").await.unwrap(), b"copy me");
    assert_eq!(f.read(MEDIA, "a2").await.unwrap(), b"copy me");
    assert_eq!(f.files(&backup).len(), 1);
    assert_eq!(f.files(&f.media).len(), 1);

    let events = f.events(&backup).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].0.as_str(), events[0].1.as_str()),
        ("nimbus.blob.created", "b")
    );

    assert!(matches!(
        f.blobs.copy(MEDIA, "a", BACKUP, "c").await,
        Err(DataError::NotFound(_))
    ));
    assert!(matches!(
        f.blobs
            .copy(MEDIA, "a2", StoreRef::new("other", "media"), "c")
            .await,
        Err(DataError::Invalid(_))
    ));
}

#[tokio::test]
async fn drop_store_removes_everything() {
    let f = Fixture::new();
    let backup = f.catalog.create(StoreKind::Buckets, BACKUP).unwrap();
    f.put("a", b"1").await;
    f.put("b", b"2").await;
    f.blobs
        .put(BACKUP, "other", PutOptions::default(), body(&[b"3"]))
        .await
        .unwrap();
    let upload = f
        .blobs
        .create_multipart(MEDIA, "c", PutOptions::default())
        .await
        .unwrap();
    f.blobs
        .upload_part(MEDIA, &upload, 1, None, body(&[b"p"]))
        .await
        .unwrap();
    f.blobs.drop_store(&f.media).await.unwrap();

    assert!(!f.root().join(f.media.id.to_string()).exists());
    assert!(matches!(
        f.catalog.lookup(StoreKind::Buckets, MEDIA),
        Err(DataError::NoSuchStore { .. })
    ));
    assert!(matches!(
        f.blobs.head(MEDIA, "a").await,
        Err(DataError::NoSuchStore { .. })
    ));
    assert_eq!(f.blobs.stats(&f.media).await.unwrap(), (0, 0));
    assert!(f.events(&f.media).await.is_empty());
    let left: i64 = f
        .catalog
        .db()
        .call_blocking(|c| {
            Ok(c.query_row(
                "SELECT (SELECT COUNT(*) FROM blob_uploads) + (SELECT COUNT(*) FROM blob_parts)",
                [],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    assert_eq!(left, 0);
    // Other buckets are untouched.
    assert_eq!(f.read(BACKUP, "other").await.unwrap(), b"3");
    assert_eq!(f.files(&backup).len(), 1);
}

#[tokio::test]
async fn change_events_follow_the_writes() {
    let f = Fixture::new();
    let put = PutOptions {
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    let a = f.blobs.put(MEDIA, "a", put, body(&[b"aa"])).await.unwrap();
    f.put("b", b"b").await;
    assert!(f.blobs.delete(MEDIA, "a").await.unwrap());
    assert!(!f.blobs.delete(MEDIA, "a").await.unwrap());
    assert!(f.read(MEDIA, "a").await.is_none());

    let events = f.events(&f.media).await;
    let summary: Vec<(&str, &str)> = events
        .iter()
        .map(|(ty, subject, _)| (ty.as_str(), subject.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("nimbus.blob.created", "a"),
            ("nimbus.blob.created", "b"),
            ("nimbus.blob.deleted", "a"),
        ]
    );
    assert_eq!(
        events[0].2,
        serde_json::json!({"key": "a", "size": 2, "etag": a.etag, "content_type": "text/plain"})
    );
    assert_eq!(events[2].2, serde_json::json!({"key": "a"}));
    assert!(f.files(&f.media).len() == 1);
}
