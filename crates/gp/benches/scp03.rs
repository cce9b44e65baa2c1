//! SCP03 throughput at security level 33 (C-MAC, C-DEC, R-MAC, R-ENC), AES-128, S8, against a
//! baseline measured in the same run: raw AES-CMAC of this crate over the same bytes.
//!
//! Run: `cargo bench -p tsm-gp --bench scp03` (`-- --quick` for a short run). The harness is a
//! plain timing loop: inputs for a batch are prepared untimed (a card must see commands in the
//! order the host wrapped them), the batch is timed, and the median of several batches is
//! reported in ns per operation and MB/s of plain data, with the ratio to the CMAC baseline.

use std::hint::black_box;
use std::time::Instant;
use tsm_gp::crypto::{self, SecretKey};
use tsm_gp::scp::scp03::{Expect, HostHandshake, Scp03Host, card};
use tsm_gp::scp::{CardChannel, ChannelOptions, HostChannel, SecurityLevel, StaticKeys};
use tsm_gp::{CommandApdu, ResponseApdu, StatusWord};

struct Bench {
    batch: usize,
    samples: usize,
}

impl Bench {
    /// Median ns per operation: `prepare(n)` builds n inputs untimed, `op` runs on each, timed.
    fn run<T>(&self, mut prepare: impl FnMut(usize) -> Vec<T>, mut op: impl FnMut(T)) -> f64 {
        let mut v: Vec<f64> = (0..self.samples + 1)
            .map(|_| {
                let inputs = prepare(self.batch);
                let t = Instant::now();
                for x in inputs {
                    op(x);
                }
                t.elapsed().as_nanos() as f64 / self.batch as f64
            })
            .skip(1) // warm-up
            .collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    }
}

fn open(key: &SecretKey) -> (Scp03Host, card::Scp03Card) {
    let keys = StaticKeys::single(key.clone(), 0x30);
    let (hs, iu) = HostHandshake::new(keys.clone(), &[1; 8], ChannelOptions::default()).unwrap();
    let params = card::CardParams {
        i: 0x70,
        sequence_counter: 1,
        kdd: [0; 10],
        sd_aid: tsm_gp::profile::GP_ISD_AID.to_vec(),
        random_challenge: None,
        s16: false,
    };
    let (r1, pending) = card::on_init_update(&keys, &iu, params).unwrap();
    let auth = hs.on_init_update(&r1, SecurityLevel::ALL, Expect::any()).unwrap();
    let (r2, card) = pending.on_external_authenticate(&auth.external_authenticate()).unwrap();
    (auth.on_external_authenticate(&r2).unwrap(), card)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let b = if quick { Bench { batch: 2_000, samples: 3 } } else { Bench { batch: 20_000, samples: 9 } };
    let key = SecretKey::aes(&(0x40u8..0x50).collect::<Vec<_>>()).unwrap();

    println!("SCP03 security level 33 (C-MAC+C-DEC+R-MAC+R-ENC), AES-128, S8");
    println!("batch {} operations, median of {} batches\n", b.batch, b.samples);
    println!("{:<50} {:>9} {:>9} {:>9}", "operation", "ns/op", "MB/s", "vs CMAC");

    for plain_len in [239usize, 255] {
        let cmd = CommandApdu::new(0x80, 0xE2, 0x00, 0x00).with_data(vec![0xA5; plain_len]);
        let resp = ResponseApdu::new(vec![0x3C; plain_len], StatusWord::SUCCESS);
        let (mut host, _) = open(&key);
        let wire_len = host.wrap(&cmd).unwrap().data.len();

        // Baseline: one CMAC over as many bytes as the C-MAC covers (chaining value, header, data).
        let mac_input = vec![0x5Au8; 16 + 7 + wire_len - 8];
        let base = b.run(|n| vec![(); n], |_| {
            black_box(crypto::cmac(&key, black_box(&mac_input)).unwrap());
        });

        let wrap = b.run(|n| vec![(); n], |_| {
            black_box(host.wrap(black_box(&cmd)).unwrap());
        });

        let (mut host, mut card) = open(&key);
        let unwrap_cmd = b.run(|n| (0..n).map(|_| host.wrap(&cmd).unwrap()).collect(), |w| {
            black_box(card.unwrap_command(&w).unwrap());
        });

        // Card side: a response per command; the card must have seen the command first.
        let (mut host, mut card) = open(&key);
        let wrap_resp = b.run(
            |n| (0..n).map(|_| host.wrap(&cmd).unwrap()).collect::<Vec<_>>(),
            |w| {
                card.unwrap_command(&w).unwrap();
                black_box(card.wrap_response(resp.clone()).unwrap());
            },
        ) - unwrap_cmd;

        // Host side: responses checked against the context of the command they answer.
        let (host, mut card) = open(&key);
        let host = std::cell::RefCell::new(host);
        let unwrap_resp = b.run(
            |n| {
                (0..n)
                    .map(|_| {
                        let w = host.borrow_mut().wrap(&cmd).unwrap();
                        let ctx = host.borrow().response_context();
                        card.unwrap_command(&w).unwrap();
                        (ctx, card.wrap_response(resp.clone()).unwrap())
                    })
                    .collect()
            },
            |(ctx, r)| {
                black_box(host.borrow().unwrap_with(&ctx, &r).unwrap());
            },
        );

        let row = |name: String, ns: f64| {
            let mbps = plain_len as f64 / ns * 1000.0;
            let base_mbps = plain_len as f64 / base * 1000.0;
            println!("{name:<50} {ns:>9.0} {mbps:>9.1} {:>8.2}x", mbps / base_mbps);
        };
        row(format!("baseline AES-CMAC over {} B", mac_input.len()), base);
        row(format!("host wrap command ({plain_len} B -> {wire_len} B)"), wrap);
        row(format!("card unwrap command ({plain_len} B)"), unwrap_cmd);
        row(format!("card wrap response ({plain_len} B)"), wrap_resp.max(1.0));
        row(format!("host unwrap response ({plain_len} B)"), unwrap_resp);
        println!();
    }
    println!("MB/s = plain data bytes per microsecond; 'vs CMAC' = throughput / baseline throughput.");
}
