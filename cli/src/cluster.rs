//! `tidepool cluster init`: a new cluster folder with its identity and certificates;
//! `tidepool cluster host`: the folder one host of a cluster on several machines needs.

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
    /// Monitors the cluster will run (1, 3 or 5) on this machine's loopback, at free ports;
    /// each gets a certificate `mon-N`.
    #[arg(long, default_value_t = 3, value_parser = parse_mons)]
    mons: u8,
    /// A monitor's address (`198.18.0.1:6789`, or a name resolved now), in rank order; give
    /// 1, 3 or 5 for a cluster on several hosts. Replaces `--mons`.
    #[arg(long = "mon", value_name = "HOST:PORT", conflicts_with = "mons")]
    mon_addrs: Vec<String>,
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
    let monitors = if args.mon_addrs.is_empty() {
        loopback_monitors(args.mons)?
    } else {
        for text in &args.mon_addrs {
            tidepool_proto::mon::check_host_port(text).map_err(|e| anyhow::anyhow!("--mon {e}"))?;
        }
        parse_mons(&args.mon_addrs.len().to_string()).map_err(anyhow::Error::msg)?;
        args.mon_addrs
    };
    create(&args.dir, monitors, &args.entities)?;
    Ok(())
}

/// Creates the cluster folder `dir` for monitors at `monitors` (by rank: addresses, or names
/// resolved whenever the monitor map is read), with certificates for the admin, the monitors
/// and `entities`; returns the cluster id.
pub fn create(dir: &Path, monitors: Vec<String>, entities: &[String]) -> Result<String> {
    let mons = monitors.len();
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
    write_monmap(dir, monitors)?;
    write_cluster_file(&cluster_file, &cluster_id)?;
    println!("cluster {cluster_id} created in {}", dir.display());
    println!("  CA certificate: {}", dir.join("ca.pem").display());
    println!("  certificates:   {}", certs.display());
    Ok(cluster_id)
}

/// One free loopback UDP port per monitor, picked by binding port 0.
pub fn loopback_monitors(mons: u8) -> Result<Vec<String>> {
    let sockets = (0..mons)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("picking monitor ports")?;
    sockets
        .iter()
        .map(|s| Ok(s.local_addr()?.to_string()))
        .collect()
}

/// Writes `monmap.json`.
fn write_monmap(dir: &Path, addrs: Vec<String>) -> Result<()> {
    let monmap = serde_json::json!({ "version": 1, "addrs": addrs });
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

/// Flags of `tidepool cluster host`.
#[derive(Debug, Args)]
pub struct HostArgs {
    #[command(flatten)]
    cluster: crate::admin::ClusterArgs,
    /// The host's name: the host bucket its OSDs go into (its failure domain).
    name: String,
    /// The folder to write: copy it to the host, as `/etc/tidepool`. A host folder of this
    /// cluster written before gets the new certificates added.
    #[arg(long)]
    out: PathBuf,
    /// Ranks of the monitors the host runs (repeatable).
    #[arg(long = "mon", value_name = "RANK")]
    mons: Vec<u8>,
    /// OSDs to make for the host now (the monitors must be running): each is created in the
    /// map under the host and gets its certificate.
    #[arg(long, default_value_t = 0)]
    osds: u32,
    /// Each new OSD's weight.
    #[arg(long, default_value = "1")]
    weight: tidepool_placement::Weight,
    /// The host runs an S3 gateway.
    #[arg(long)]
    gateway: bool,
    /// The host gets the admin certificate too (for `tidepool status` and the like there).
    #[arg(long)]
    admin: bool,
}

/// Writes the folder one host needs: the cluster's identity, the CA certificate (not its
/// key), the monitor map and the certificates of exactly the daemons it runs. OSDs are made
/// in the map first, as `ceph osd new` makes them, so the host needs no admin rights.
pub fn host(args: HostArgs) -> Result<()> {
    use tidepool_proto::mon::{Command, MonMap};
    let dir = args.cluster.dir();
    let cluster_id = load_cluster_id(&dir)?;
    let monmap = tidepool_monitor::daemon::load_monmap(&dir)?;
    if let Some(rank) = args
        .mons
        .iter()
        .find(|r| usize::from(**r) >= monmap.addrs.len())
    {
        bail!(
            "--mon {rank}: the monitor map has {} monitors",
            monmap.addrs.len()
        );
    }
    let adding = args.out.join("cluster.json").exists();
    if adding {
        let theirs = load_cluster_id(&args.out)?;
        if theirs != cluster_id {
            bail!(
                "{} holds cluster {theirs}, not {cluster_id}",
                args.out.display()
            );
        }
    } else if args.out.exists() && std::fs::read_dir(&args.out)?.next().is_some() {
        bail!(
            "{} is neither empty nor a host folder of this cluster",
            args.out.display()
        );
    }
    let ca = ClusterCa::load(&dir, &cluster_id)?;
    let certs = args.out.join("certs");
    std::fs::create_dir_all(&certs).with_context(|| format!("creating {}", certs.display()))?;
    for file in ["cluster.json", "ca.pem", MonMap::FILE] {
        std::fs::copy(dir.join(file), args.out.join(file))
            .with_context(|| format!("copying {file}"))?;
    }
    let mut run = Vec::new();
    let mut entities: Vec<String> = args.mons.iter().map(|r| MonMap::entity(*r)).collect();
    for rank in &args.mons {
        run.push(format!("tidepool mon --id {rank} --data /etc/tidepool"));
    }
    if args.gateway {
        entities.push(crate::gateway::GATEWAY_ENTITY.to_owned());
        run.push("tidepool gateway --cluster /etc/tidepool --bind HOST_ADDRESS:7480".to_owned());
    }
    if args.admin {
        entities.push(ADMIN_ENTITY.to_owned());
    }
    for entity in &entities {
        ca.issue_into(entity, &certs)
            .with_context(|| format!("issuing a certificate for {entity}"))?;
    }
    let mut osds = Vec::new();
    if args.osds > 0 {
        osds = crate::admin::runtime()?.block_on(async {
            let mut admin = args.cluster.client()?;
            let mut created = Vec::new();
            for _ in 0..args.osds {
                let outcome = admin
                    .command(Command::OsdCreate {
                        host: args.name.clone(),
                        weight: args.weight,
                    })
                    .await?
                    .map_err(|e| anyhow::anyhow!("creating an OSD on {}: {e}", args.name))?;
                created.push(outcome.created.context("OsdCreate names the new OSD")?);
            }
            anyhow::Ok(created)
        })?;
        for id in &osds {
            let id = *id;
            let entity = tidepool_osd::daemon::entity(tidepool_placement::OsdId(id));
            ca.issue_into(&entity, &certs)
                .with_context(|| format!("issuing a certificate for {entity}"))?;
            run.push(format!(
                "tidepool osd --cluster /etc/tidepool --id {id} --data /var/lib/tidepool/osd-{id} \
                 --bind HOST_ADDRESS:0"
            ));
        }
    }
    if args.cluster.format() == crate::OutputFormat::Json {
        let folder = serde_json::json!({
            "host": args.name,
            "folder": args.out,
            "osds": osds,
            "run": run,
        });
        println!("{}", serde_json::to_string_pretty(&folder)?);
        return Ok(());
    }
    println!(
        "{} holds what host {} needs; copy it there as /etc/tidepool and run (or enable the \
         units of deploy/systemd):",
        args.out.display(),
        args.name
    );
    for line in run {
        println!("  {line}");
    }
    Ok(())
}
