//! The indexes a node keeps: declared from its configuration, built in the background a
//! batch at a time, and offered to the query planner once built.

use crate::NodeError;
use cbddc_core::{DocumentStore, IndexDefinition, IndexStatus};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Documents indexed per transaction of a build. Entries land all over the index, so
/// each commit writes most of the pages it touched: larger steps write each page fewer
/// times; a write waits behind one step (about a tenth of a second).
const BUILD_BATCH: usize = 20_000;
/// After a build step failed, the next waits this long.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// Writes pending in the indexes are folded once none came for this long, so that a
/// query after a burst of writes does not wait for the fold.
const FOLD_WHEN_QUIET: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Declared {
    /// Every index of the configuration in force.
    all: Vec<IndexDefinition>,
    /// Those still being built (queries do not use them yet).
    building: Vec<IndexDefinition>,
    /// Counts declarations: a build step that started before one does not say what is
    /// being built after it.
    generation: u64,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Indexes {
    store: Arc<dyn DocumentStore>,
    declared: RwLock<Declared>,
    wake: Notify,
}

impl Indexes {
    pub(crate) fn new(store: Arc<dyn DocumentStore>) -> Self {
        Self {
            store,
            declared: RwLock::new(Declared::default()),
            wake: Notify::new(),
        }
    }

    /// Makes the store's indexes exactly `wanted` (new ones start building, others are
    /// dropped).
    pub(crate) async fn declare(&self, wanted: Vec<IndexDefinition>) -> Result<(), NodeError> {
        self.store.declare_indexes(wanted.clone()).await?;
        let building = self
            .store
            .indexes()
            .await?
            .into_iter()
            .filter(|i| i.building.is_some())
            .map(|i| i.definition)
            .collect();
        let mut declared = self.declared.write().unwrap_or_else(|p| p.into_inner());
        declared.all = wanted;
        declared.building = building;
        declared.generation += 1;
        drop(declared);
        self.wake.notify_one();
        Ok(())
    }

    /// The built indexes of `collection`, which queries may read.
    pub(crate) fn built(&self, collection: &str) -> Vec<IndexDefinition> {
        let declared = self.declared.read().unwrap_or_else(|p| p.into_inner());
        declared
            .all
            .iter()
            .filter(|i| i.collection == collection && !declared.building.contains(i))
            .cloned()
            .collect()
    }

    /// Every index, with its entries and build progress.
    pub(crate) async fn status(&self) -> Result<Vec<IndexStatus>, cbddc_core::StorageError> {
        self.store.indexes().await
    }

    /// Builds what is declared and not built, a batch per transaction, until `token` is
    /// cancelled; while there is nothing to build, has the writes pending in the indexes
    /// folded in once no write came for [`FOLD_WHEN_QUIET`].
    pub(crate) async fn run(self: Arc<Self>, token: CancellationToken) {
        loop {
            let (to_build, any, generation) = {
                let declared = self.declared.read().unwrap_or_else(|p| p.into_inner());
                (
                    !declared.building.is_empty(),
                    !declared.all.is_empty(),
                    declared.generation,
                )
            };
            if !to_build {
                // Nothing to build: fold what writes left pending once they stop.
                let quiet = async {
                    if !any {
                        return std::future::pending().await;
                    }
                    tokio::time::sleep(FOLD_WHEN_QUIET).await;
                };
                tokio::select! {
                    () = token.cancelled() => return,
                    () = self.wake.notified() => continue,
                    () = quiet => {}
                }
                match self.store.fold_indexes(FOLD_WHEN_QUIET).await {
                    Ok(true) => tracing::debug!("folded the writes pending in the indexes"),
                    Ok(false) => {}
                    Err(cbddc_core::StorageError::Closed) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "folding writes into the indexes failed; trying again later")
                    }
                }
                continue;
            }
            let step = tokio::select! {
                () = token.cancelled() => return,
                step = self.store.build_indexes(BUILD_BATCH) => step,
            };
            match step {
                Ok(building) => {
                    let mut declared = self.declared.write().unwrap_or_else(|p| p.into_inner());
                    if declared.generation != generation {
                        continue;
                    }
                    for done in declared.building.iter().filter(|i| !building.contains(i)) {
                        tracing::info!(index = %done.name(), "index built: queries use it");
                    }
                    declared.building = building;
                }
                Err(cbddc_core::StorageError::Closed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "building an index failed; trying again");
                    tokio::select! {
                        () = token.cancelled() => return,
                        () = tokio::time::sleep(RETRY_AFTER_FAILURE) => {}
                    }
                }
            }
        }
    }
}
