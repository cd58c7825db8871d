//! `tidepool cluster init`: a new cluster folder with its identity and certificates.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use tidepool_messenger::ClusterCa;

/// Flags of `tidepool cluster init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The folder to create (must not hold a cluster yet).
    dir: PathBuf,
    /// Monitors the cluster will run (1, 3 or 5); each gets a certificate `mon-N`.
    #[arg(long, default_value_t = 3, value_parser = parse_mons)]
    mons: u8,
    /// More certificates to issue besides `client-admin` and the monitors', e.g. `osd-3`.
    /// Repeatable.
    #[arg(long = "entity", value_name = "NAME")]
    entities: Vec<String>,
}

/// `cluster.json`: what identifies a cluster folder.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterFile {
    /// Format version of this file.
    pub version: u32,
    /// The cluster's id; part of every certificate name.
    pub cluster_id: String,
}

/// The name of the admin client's certificate.
pub const ADMIN_ENTITY: &str = "client-admin";

/// Creates the cluster folder: `cluster.json`, the CA (`ca.pem`, `ca.key`) and certificates
/// under `certs/`.
pub fn init(args: InitArgs) -> Result<()> {
    create(&args.dir, args.mons, &args.entities)?;
    Ok(())
}

/// Creates the cluster folder `dir` for `mons` monitors, with certificates for the admin, the
/// monitors and `entities`; returns the cluster id.
pub fn create(dir: &Path, mons: u8, entities: &[String]) -> Result<String> {
    let cluster_file = dir.join("cluster.json");
    if cluster_file.exists() {
        bail!(
            "{} already holds a cluster (found {})",
            dir.display(),
            cluster_file.display()
        );
    }
    let cluster_id = new_cluster_id()?;
    let ca = ClusterCa::generate(&cluster_id)?;
    ca.save(dir)?;
    let certs = dir.join("certs");
    let mon_names: Vec<String> = (0..mons).map(|rank| format!("mon-{rank}")).collect();
    let all = std::iter::once(ADMIN_ENTITY)
        .chain(mon_names.iter().map(String::as_str))
        .chain(entities.iter().map(String::as_str));
    for entity in all {
        ca.issue_into(entity, &certs)
            .with_context(|| format!("issuing a certificate for {entity}"))?;
    }
    write_monmap(dir, mons)?;
    write_cluster_file(&cluster_file, &cluster_id)?;
    println!("cluster {cluster_id} created in {}", dir.display());
    println!("  CA certificate: {}", dir.join("ca.pem").display());
    println!("  certificates:   {}", certs.display());
    Ok(cluster_id)
}

/// Writes `monmap.json`: one free loopback UDP port per monitor, picked by binding port 0.
fn write_monmap(dir: &Path, mons: u8) -> Result<()> {
    let sockets = (0..mons)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("picking monitor ports")?;
    let monmap = tidepool_proto::mon::MonMap {
        version: 1,
        addrs: sockets
            .iter()
            .map(|s| s.local_addr())
            .collect::<std::io::Result<_>>()?,
    };
    let path = dir.join(tidepool_proto::mon::MonMap::FILE);
    std::fs::write(&path, serde_json::to_vec_pretty(&monmap)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// The cluster id of the folder `dir`.
pub fn load_cluster_id(dir: &Path) -> Result<String> {
    let path = dir.join("cluster.json");
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "{} is not a cluster folder (no cluster.json); create one with `tidepool cluster init`",
            dir.display()
        )
    })?;
    let file: ClusterFile =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    Ok(file.cluster_id)
}

fn parse_mons(text: &str) -> Result<u8, String> {
    match text.parse::<u8>() {
        Ok(n @ (1 | 3 | 5)) => Ok(n),
        _ => Err(format!("{text:?}: a cluster runs 1, 3 or 5 monitors")),
    }
}

fn write_cluster_file(path: &Path, cluster_id: &str) -> Result<()> {
    let file = ClusterFile {
        version: 1,
        cluster_id: cluster_id.to_owned(),
    };
    std::fs::write(path, serde_json::to_vec_pretty(&file)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// A random 16-hex-digit cluster id from the kernel's random source.
fn new_cluster_id() -> Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
