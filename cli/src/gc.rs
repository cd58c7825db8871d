//! `tidepool gc`: one pass of the bucket garbage collector now (the gateways run one every
//! `--gc-interval`), like `radosgw-admin gc process`.

use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use serde_json::json;
use tidepool_buckets::{Buckets, BucketsConfig};

use crate::admin::{runtime, ClusterArgs};
use crate::OutputFormat;

/// What `tidepool gc` takes.
#[derive(Debug, Args)]
pub struct GcArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Also remove the garbage not yet due (its delay lets readers that began before an
    /// object was replaced finish).
    #[arg(long)]
    include_all: bool,
}

pub fn run(args: GcArgs) -> Result<()> {
    runtime()?.block_on(async {
        let client = crate::objects::connect(&args.cluster).await?;
        let buckets = Buckets::new(Arc::new(client), BucketsConfig::default());
        let due = if args.include_all {
            u64::MAX
        } else {
            tidepool_buckets::now_ms()
        };
        let pass = buckets.collect_garbage_due_by(due).await?;
        match args.cluster.format() {
            OutputFormat::Json => println!(
                "{}",
                json!({"records": pass.records, "stripes": pass.stripes})
            ),
            OutputFormat::Plain => println!(
                "garbage collected: {} records, {} stripes",
                pass.records, pass.stripes
            ),
        }
        anyhow::Ok(())
    })
}
