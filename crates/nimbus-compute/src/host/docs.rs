//! `nimbus:data/docs` over the node's [`DocStore`](nimbus_core::data::DocStore)
//! port. Documents cross as JSON text.

use nimbus_core::app::StoreKind;
use nimbus_core::data::{DataError, DocQuery, Document, Filter, OrderBy};

use super::HostState;
use super::data::bindings::nimbus::data::docs as wit;
use super::data::{WitError, to_wit};

type DocResult<T> = wasmtime::Result<Result<T, WitError>>;

fn parse_json(what: &str, text: &str) -> Result<serde_json::Value, DataError> {
    serde_json::from_str(text).map_err(|e| DataError::Invalid(format!("{what} is not JSON: {e}")))
}

fn to_wit_doc(doc: Document) -> wit::Document {
    wit::Document {
        id: doc.id,
        rev: doc.rev,
        body: doc.body.to_string(),
    }
}

fn to_query(query: wit::DocQuery) -> Result<DocQuery, DataError> {
    let filter = match query.filter {
        Some(text) => Some(Filter::from_json(&parse_json("the filter", &text)?)?),
        None => None,
    };
    let order_by = query
        .order_by
        .iter()
        .map(|o| OrderBy::parse(o))
        .collect::<Result<_, _>>()?;
    Ok(DocQuery {
        filter,
        order_by,
        limit: query.limit.map(|l| l as usize),
        cursor: query.cursor,
    })
}

impl wit::Host for HostState {
    async fn get(&mut self, collection: String, id: String) -> DocResult<Option<wit::Document>> {
        let data = &self.data;
        let result = async {
            let store = data.granted(StoreKind::Docs, &collection)?;
            data.ports.docs.get(store, &id).await
        }
        .await;
        Ok(result.map(|d| d.map(to_wit_doc)).map_err(to_wit))
    }

    async fn put(
        &mut self,
        collection: String,
        id: String,
        body: String,
        if_rev: Option<u64>,
    ) -> DocResult<wit::Document> {
        let data = &self.data;
        let result = async {
            let store = data.granted(StoreKind::Docs, &collection)?;
            let body = parse_json("the document", &body)?;
            data.ports.docs.put(store, &id, body, if_rev).await
        }
        .await;
        Ok(result.map(to_wit_doc).map_err(to_wit))
    }

    async fn patch(
        &mut self,
        collection: String,
        id: String,
        patch: String,
        if_rev: Option<u64>,
    ) -> DocResult<wit::Document> {
        let data = &self.data;
        let result = async {
            let store = data.granted(StoreKind::Docs, &collection)?;
            let patch = parse_json("the patch", &patch)?;
            data.ports.docs.patch(store, &id, patch, if_rev).await
        }
        .await;
        Ok(result.map(to_wit_doc).map_err(to_wit))
    }

    async fn delete(
        &mut self,
        collection: String,
        id: String,
        if_rev: Option<u64>,
    ) -> DocResult<bool> {
        let data = &self.data;
        let result = async {
            let store = data.granted(StoreKind::Docs, &collection)?;
            data.ports.docs.delete(store, &id, if_rev).await
        }
        .await;
        Ok(result.map_err(to_wit))
    }

    async fn query(&mut self, collection: String, query: wit::DocQuery) -> DocResult<wit::Page> {
        let data = &self.data;
        let result = async {
            let store = data.granted(StoreKind::Docs, &collection)?;
            data.ports.docs.query(store, to_query(query)?).await
        }
        .await;
        Ok(result
            .map(|page| wit::Page {
                documents: page.documents.into_iter().map(to_wit_doc).collect(),
                cursor: page.cursor,
            })
            .map_err(to_wit))
    }
}
