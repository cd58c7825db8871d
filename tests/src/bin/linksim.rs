//! A switch in user space whose ports delay (and may lose) what they carry: a stand-in for
//! a bridge with `tc netem` on every link, for kernels built without netem.
//!
//! `linksim --delay-us 1000 [--loss-percent P] PORT...` creates one TAP device per port name,
//! prints `ready` once they exist, and forwards Ethernet frames between them (learning which
//! MAC address is behind which port, flooding the rest) until it is killed. Each frame is
//! held `delay-us` microseconds before it leaves, as a link of that latency would, and lost
//! with the given probability. The caller moves the devices into the hosts' namespaces
//! (`ip link set PORT netns NS`) and addresses them there; the file descriptors stay the
//! switch's.
//!
//! Lines on its standard input change one port's link while it runs, as `tc netem` on a
//! host's link does: `PORT DELAY_US LOSS_PERCENT` adds that delay and loss to every frame
//! to or from port number PORT (from 0, in the order given); `PORT 0 0` heals it.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead as _, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tun_tap::{Iface, Mode};

/// A frame on its way out of a port, and when it may leave.
type Queue = Arc<(Mutex<VecDeque<(Instant, Vec<u8>)>>, Condvar)>;

/// Frames queued for one port beyond this are dropped, as a full link's queue does.
const QUEUE_MAX: usize = 10_000;

fn main() {
    let mut delay = Duration::from_micros(1000);
    let mut loss = 0.0f64;
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--delay-us" => delay = Duration::from_micros(parse(&value())),
            "--loss-percent" => loss = parse::<f64>(&value()) / 100.0,
            name if !name.starts_with('-') && name.len() < 16 => names.push(name.to_owned()),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if names.len() < 2 {
        usage("give at least two ports");
    }
    let taps: Vec<Arc<Iface>> = names.iter().map(|name| Arc::new(open_tap(name))).collect();
    println!("ready");
    std::io::stdout().flush().ok();

    let queues: Vec<Queue> = taps
        .iter()
        .map(|_| Arc::new((Mutex::new(VecDeque::new()), Condvar::new())))
        .collect();
    let macs: Arc<Mutex<HashMap<[u8; 6], usize>>> = Arc::default();
    // Per port: the delay (µs) and the loss (parts per million) its link adds.
    let links: Arc<Vec<(AtomicU64, AtomicU64)>> = Arc::new(
        (0..taps.len())
            .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
            .collect(),
    );
    let control = links.clone();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let words: Vec<&str> = line.split_whitespace().collect();
            let parsed = match words.as_slice() {
                [port, delay, loss] => port
                    .parse::<usize>()
                    .ok()
                    .filter(|p| *p < control.len())
                    .zip(delay.parse::<u64>().ok())
                    .zip(loss.parse::<f64>().ok()),
                _ => None,
            };
            let Some(((port, delay), loss)) = parsed else {
                eprintln!("linksim: ignored {line:?} (PORT DELAY_US LOSS_PERCENT)");
                continue;
            };
            control[port].0.store(delay, Ordering::Relaxed);
            control[port]
                .1
                .store((loss * 10_000.0) as u64, Ordering::Relaxed);
            println!("port {port}: +{delay} us, {loss} % lost");
            std::io::stdout().flush().ok();
        }
    });
    let mut threads = Vec::new();
    for (port, tap) in taps.into_iter().enumerate() {
        let writer = tap.clone();
        let queue = queues[port].clone();
        threads.push(std::thread::spawn(move || loop {
            let (frame, due) = {
                let (lock, ready) = &*queue;
                let mut frames = lock.lock().expect("queue");
                while frames.is_empty() {
                    frames = ready.wait(frames).expect("queue");
                }
                let (due, frame) = frames.pop_front().expect("a frame");
                (frame, due)
            };
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            // A port whose device is down refuses frames: they are lost, as on a cable.
            let _ = writer.send(&frame);
        }));
        let queues = queues.clone();
        let macs = macs.clone();
        let links = links.clone();
        let reader = tap;
        threads.push(std::thread::spawn(move || {
            let mut random = 0x9e37_79b9_7f4a_7c15u64 ^ (port as u64 + 1);
            let mut buffer = vec![0u8; 65_536];
            loop {
                let n = match reader.recv(&mut buffer) {
                    Ok(n) if n >= 14 => n,
                    Ok(_) => continue,
                    Err(error) if error.raw_os_error() == Some(libc::EIO) => {
                        // The device is down (its host's link cut): wait for it to return.
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                    Err(error) => panic!("reading port {port}: {error}"),
                };
                let frame = &buffer[..n];
                let destination: [u8; 6] = frame[0..6].try_into().expect("six bytes");
                let source: [u8; 6] = frame[6..12].try_into().expect("six bytes");
                let target = {
                    let mut macs = macs.lock().expect("macs");
                    macs.insert(source, port);
                    macs.get(&destination).copied()
                };
                let now = Instant::now();
                let ports: Vec<usize> = match target {
                    Some(to) if destination[0] & 1 == 0 => vec![to],
                    _ => (0..queues.len()).filter(|p| *p != port).collect(),
                };
                for to in ports {
                    if to == port {
                        continue;
                    }
                    let (from, into) = (&links[port], &links[to]);
                    let extra_loss =
                        (from.1.load(Ordering::Relaxed) + into.1.load(Ordering::Relaxed)) as f64
                            / 1_000_000.0;
                    let lost = loss + extra_loss;
                    if lost > 0.0 {
                        random ^= random << 13;
                        random ^= random >> 7;
                        random ^= random << 17;
                        if (random >> 11) as f64 / (1u64 << 53) as f64 <= lost {
                            continue;
                        }
                    }
                    let due = now
                        + delay
                        + Duration::from_micros(
                            from.0.load(Ordering::Relaxed) + into.0.load(Ordering::Relaxed),
                        );
                    let (lock, ready) = &*queues[to];
                    let mut frames = lock.lock().expect("queue");
                    if frames.len() < QUEUE_MAX {
                        frames.push_back((due, frame.to_vec()));
                        ready.notify_one();
                    }
                }
            }
        }));
    }
    for thread in threads {
        let _ = thread.join();
    }
}

fn parse<T: std::str::FromStr>(text: &str) -> T {
    text.parse()
        .unwrap_or_else(|_| usage(&format!("{text:?} is not a number")))
}

fn usage(problem: &str) -> ! {
    eprintln!("linksim: {problem}\nusage: linksim [--delay-us N] [--loss-percent P] PORT PORT...");
    std::process::exit(2);
}

/// Creates the TAP device `name` (Ethernet frames, no packet information header).
fn open_tap(name: &str) -> Iface {
    Iface::without_packet_info(name, Mode::Tap)
        .unwrap_or_else(|error| panic!("creating TAP {name}: {error}"))
}
