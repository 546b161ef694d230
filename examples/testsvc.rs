//! A test workload for the service supervisor (std only, so it builds as a
//! small static binary for the image's extension directory).
//!
//! Arguments are steps, run in order:
//!   say TEXT      print TEXT on stdout          warn TEXT   on stderr
//!   wait MS       sleep MS milliseconds         exit N      exit with code N
//!   crash         abort (SIGABRT)               alloc MIB   allocate and touch MIB MiB
//!   listen PORT   accept on 127.0.0.1:PORT (in the background)
//!   flood N       print N lines as fast as possible
//!   sleep         sleep for ever
//! It prints `testsvc start unix_us=T pid=P` first and `testsvc exit
//! unix_us=T` before exit or crash (restart latency from its own clock).
//! After the last step it sleeps for ever.

use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn unix_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

fn number<T: std::str::FromStr>(args: &mut impl Iterator<Item = String>, what: &str) -> T {
    match args.next().and_then(|a| a.parse().ok()) {
        Some(n) => n,
        None => {
            eprintln!("testsvc: {what} needs a number");
            std::process::exit(2);
        }
    }
}

fn main() {
    println!(
        "testsvc start unix_us={} pid={}",
        unix_us(),
        std::process::id()
    );
    let mut args = std::env::args().skip(1);
    let mut held: Vec<Vec<u8>> = Vec::new();
    while let Some(step) = args.next() {
        match step.as_str() {
            "say" => println!("{}", args.next().unwrap_or_default()),
            "warn" => eprintln!("{}", args.next().unwrap_or_default()),
            "wait" => std::thread::sleep(Duration::from_millis(number(&mut args, "wait"))),
            "exit" => {
                let code: i32 = number(&mut args, "exit");
                println!("testsvc exit unix_us={}", unix_us());
                std::process::exit(code);
            }
            "crash" => {
                println!("testsvc exit unix_us={}", unix_us());
                std::process::abort();
            }
            "alloc" => {
                let mib: usize = number(&mut args, "alloc");
                for _ in 0..mib {
                    // Touch every page so the memory is really used.
                    let mut block = vec![0u8; 1 << 20];
                    for i in (0..block.len()).step_by(4096) {
                        block[i] = 1;
                    }
                    held.push(block);
                }
                println!("allocated {mib} MiB");
            }
            "listen" => {
                let port: u16 = number(&mut args, "listen");
                match std::net::TcpListener::bind(("127.0.0.1", port)) {
                    Ok(listener) => {
                        println!("listening on 127.0.0.1:{port}");
                        std::thread::spawn(move || {
                            for conn in listener.incoming() {
                                drop(conn);
                            }
                        });
                    }
                    Err(e) => {
                        eprintln!("testsvc: listen {port}: {e}");
                        std::process::exit(3);
                    }
                }
            }
            "flood" => {
                let n: u64 = number(&mut args, "flood");
                let out = std::io::stdout();
                let mut out = std::io::BufWriter::new(out.lock());
                for i in 0..n {
                    let _ = writeln!(out, "flood line {i:08} xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
                }
                let _ = out.flush();
                drop(out);
                println!("flood done: {n} lines");
            }
            "sleep" => break,
            other => {
                eprintln!("testsvc: unknown step `{other}`");
                std::process::exit(2);
            }
        }
    }
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
