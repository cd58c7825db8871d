//! `tidepool object put|get|stat|rm|ls`: whole objects of a pool, through the client library.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::json;
use tidepool_client::{MonClient, ObjectClient};
use tidepool_messenger::{Identity, Messenger, MessengerConfig};
use tidepool_proto::osd::{ObjectOp, OpOutput};

use crate::admin::{runtime, ClusterArgs};
use crate::OutputFormat;

/// Object commands.
#[derive(Debug, Subcommand)]
pub enum ObjectCommand {
    /// Store FILE (`-`: standard input) as object NAME.
    Put {
        /// The pool.
        pool: String,
        /// The object.
        name: String,
        /// The file.
        file: PathBuf,
    },
    /// Write object NAME to FILE (`-`: standard output).
    Get {
        /// The pool.
        pool: String,
        /// The object.
        name: String,
        /// The file.
        file: PathBuf,
    },
    /// Show an object's size and version.
    Stat {
        /// The pool.
        pool: String,
        /// The object.
        name: String,
    },
    /// Remove an object.
    Rm {
        /// The pool.
        pool: String,
        /// The object.
        name: String,
    },
    /// List a pool's objects.
    Ls {
        /// The pool.
        pool: String,
    },
}

/// An object client for the cluster of `cluster`, as its admin.
pub async fn connect(cluster: &ClusterArgs) -> Result<ObjectClient> {
    object_client(&cluster.dir(), &cluster.identity()?).await
}

/// An object client for the cluster folder `dir`, speaking as `identity`.
pub async fn object_client(dir: &std::path::Path, identity: &Identity) -> Result<ObjectClient> {
    let mon = MonClient::new(dir, identity)?;
    let messenger = Messenger::bind(
        mon.monmap().client_bind(),
        identity,
        MessengerConfig {
            body_bytes_max: tidepool_osd::daemon::BODY_BYTES_MAX,
            request_timeout: Duration::from_secs(30),
            ..MessengerConfig::default()
        },
    )?;
    Ok(ObjectClient::new(messenger, mon).await?)
}

/// Runs an object command.
pub fn run(cluster: ClusterArgs, command: ObjectCommand) -> Result<()> {
    runtime()?.block_on(async {
        let client = connect(&cluster).await?;
        match command {
            ObjectCommand::Put { pool, name, file } => {
                let mut data = Vec::new();
                if file.as_os_str() == "-" {
                    std::io::stdin().read_to_end(&mut data)?;
                } else {
                    data = std::fs::read(&file)
                        .with_context(|| format!("reading {}", file.display()))?;
                }
                let (version, _) = client
                    .execute(&pool, &name, vec![ObjectOp::WriteFull(data.clone().into())])
                    .await?;
                if cluster.format() == OutputFormat::Json {
                    println!(
                        "{}",
                        json!({"name": name, "size": data.len(), "version": version})
                    );
                }
            }
            ObjectCommand::Get { pool, name, file } => {
                let (_, outputs) = client
                    .execute(
                        &pool,
                        &name,
                        vec![ObjectOp::Read {
                            offset: 0,
                            len: u64::MAX,
                        }],
                    )
                    .await?;
                let Some(OpOutput::Data(data)) = outputs.into_iter().next() else {
                    bail!("the OSD answered a read without data");
                };
                if file.as_os_str() == "-" {
                    std::io::stdout().write_all(&data)?;
                } else {
                    std::fs::write(&file, &data)
                        .with_context(|| format!("writing {}", file.display()))?;
                }
            }
            ObjectCommand::Stat { pool, name } => {
                let (_, outputs) = client.execute(&pool, &name, vec![ObjectOp::Stat]).await?;
                let Some(OpOutput::Stat { size, version }) = outputs.into_iter().next() else {
                    bail!("the OSD answered a stat without one");
                };
                match cluster.format() {
                    OutputFormat::Json => {
                        println!(
                            "{}",
                            json!({"name": name, "size": size, "version": version})
                        )
                    }
                    OutputFormat::Plain => println!("{pool}/{name} size {size} version {version}"),
                }
            }
            ObjectCommand::Rm { pool, name } => {
                client.execute(&pool, &name, vec![ObjectOp::Remove]).await?;
            }
            ObjectCommand::Ls { pool } => {
                let names = client.list(&pool).await?;
                match cluster.format() {
                    OutputFormat::Json => println!("{}", serde_json::to_string(&names)?),
                    OutputFormat::Plain => {
                        for name in names {
                            println!("{name}");
                        }
                    }
                }
            }
        }
        Ok(())
    })
}
