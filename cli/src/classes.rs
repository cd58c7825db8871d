//! `tidepool storage-class`: the S3 storage classes and the data pool of each (see
//! `tidepool_buckets::classes`).

use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::json;
use tidepool_buckets::{Buckets, BucketsConfig};

use crate::admin::{runtime, ClusterArgs};
use crate::OutputFormat;

/// What `tidepool storage-class` does.
#[derive(Debug, Subcommand)]
pub enum ClassCommand {
    /// List the storage classes and their data pools.
    Ls,
    /// Send the objects written with storage class CLASS to pool POOL (an erasure pool, for
    /// example); objects written before stay where they are.
    Set {
        /// The class, as S3 clients name it (`STANDARD_IA`).
        class: String,
        /// The data pool.
        #[arg(long)]
        pool: String,
    },
    /// Remove a storage class (STANDARD goes back to the default data pool); its objects
    /// still read, and new writes naming it are refused.
    Rm {
        /// The class.
        class: String,
    },
}

pub fn run(cluster: ClusterArgs, command: ClassCommand) -> Result<()> {
    runtime()?.block_on(async {
        let client = crate::objects::connect(&cluster).await?;
        let buckets = Buckets::new(Arc::new(client), BucketsConfig::default());
        match command {
            ClassCommand::Ls => {
                let classes = buckets.storage_classes().await?;
                match cluster.format() {
                    OutputFormat::Json => {
                        let rows: Vec<_> = classes
                            .iter()
                            .map(|(class, pool)| json!({"class": class, "pool": pool}))
                            .collect();
                        println!("{}", serde_json::to_string_pretty(&rows)?);
                    }
                    OutputFormat::Plain => {
                        for (class, pool) in &classes {
                            println!("{class:<20} {pool}");
                        }
                    }
                }
            }
            ClassCommand::Set { class, pool } => {
                let map = cluster.client()?.map().await?;
                if map.pool_by_name(&pool).is_none() {
                    bail!("there is no pool {pool:?} (tidepool pool ls)");
                }
                buckets.set_storage_class(&class, &pool).await?;
                println!("storage class {class} → pool {pool} (running gateways take a change within 5 s)");
            }
            ClassCommand::Rm { class } => {
                buckets.remove_storage_class(&class).await?;
                println!("storage class {class} removed");
            }
        }
        anyhow::Ok(())
    })
}
