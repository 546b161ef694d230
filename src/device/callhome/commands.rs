//! A command from the broker: checked (signature, target, expiry, replay,
//! seal), run through the API's handlers — log follows and their cancels
//! here, since there is no connection to hang them on — and answered,
//! signed (and sealed if the command was).

use std::time::Instant;

use rustls::pki_types::UnixTime;

use super::follow::{Emit, Follows};
use super::verify::{Refusal, Verified};
use super::CallHome;
use crate::device::api::handlers::{handle_blocking, handle_guarded, log_ring, runs_blocking};
use crate::mqtt::{self, MqttError, Packet, Publish, QoS};
use crate::wire::envelope::{topic, DeviceMessage};
use crate::wire::seal::{OneUseKey, StreamKey};
use crate::wire::{Request, RequestFrame, Response, ResponseFrame, WireError, MAX_RESPONSE_FRAME};

impl CallHome {
    pub(super) async fn on_publish(
        &mut self,
        p: &Publish<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), MqttError> {
        if p.topic == topic::SITE_CRL {
            self.take_site_crl(p.payload).await;
        } else if let Some((to, reply, seq)) = self.command(p.topic, p.payload, out).await? {
            self.publish(out, &to, &reply, false, Some(seq))?;
        }
        if p.qos == QoS::AtLeastOnce {
            mqtt::encode(&Packet::Puback { pid: p.pid }, out)?;
        }
        Ok(())
    }

    /// The site's revocation list, retained on the broker (delivered at
    /// every connect, and when an operator leaves a new one): the CA's
    /// signature is its authority, so it is installed like
    /// `InstallRevocations` — if newer than the list held.
    async fn take_site_crl(&self, payload: &[u8]) {
        let revocations = self.ctx.revocations.clone();
        let before = revocations.generation();
        let der = payload.to_vec();
        match smol::unblock(move || revocations.install(&der)).await {
            Ok(list) if list.generation != before => tracing::info!(
                "callhome: took the site's revocation list of {} from the broker",
                list.issued
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("callhome: the site's revocation list on the broker: {e}"),
        }
    }

    /// Check a command and run it; the signed answer, where it goes, and
    /// the command's sequence number.
    async fn command(
        &mut self,
        on: &str,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<(String, Vec<u8>, u64)>, MqttError> {
        let now = UnixTime::since_unix_epoch(self.ctx.time.now());
        let checked = self
            .authority
            .verify(payload, on, now)
            .and_then(|v| match self.replay.accept(v.key, v.seq) {
                Ok(()) => Ok(v),
                Err(e) => Err(Refusal::from(e)),
            })
            .and_then(|v| {
                let (frame, answer_key) = self.seal.open(&v)?;
                Ok((v, frame, answer_key))
            });
        let (v, frame, answer_key) = match checked {
            Ok(checked) => checked,
            Err(Refusal::Replayed(r)) if self.inflight.answers(r.seq) => {
                // The broker's copy of a command we ran and whose answer is
                // still on its way (our PUBACK was lost with the link).
                tracing::info!("callhome: seq {} delivered again; answer in flight", r.seq);
                return Ok(None);
            }
            Err(refusal) => {
                tracing::warn!("callhome: refused a command on {on}: {refusal}");
                if !refusal.authentic() {
                    return Ok(None);
                }
                let seq = refusal.seq();
                let reason = refusal.to_string();
                let says = self.signed(DeviceMessage::Refused {
                    seq,
                    reason: &reason,
                });
                return Ok(Some((topic::events(&self.device), says, seq)));
            }
        };
        self.follows.renew(&v.key, Instant::now());
        let (first_key, stream_key) = match answer_key {
            Some((first, stream)) => (Some(first), Some(stream)),
            None => (None, None),
        };
        let (id, body) = match RequestFrame::decode(&frame) {
            Ok(req) => {
                tracing::info!(
                    "callhome: {} (seq {}, role {})",
                    req.body.name(),
                    v.seq,
                    v.role.name()
                );
                (
                    req.id,
                    self.execute(&v, &req, &frame, stream_key, out).await?,
                )
            }
            Err(_) => (0, Err(WireError::DecodeFailed)),
        };
        let says = match first_key {
            Some(key) => self.sealed_answer(v.seq, id, body, key),
            None => self.answer(v.seq, id, body),
        };
        Ok(Some((topic::resp(&self.device), says, v.seq)))
    }

    /// Run one request: log follows and their cancels are ours (there is
    /// no connection to hang them on), the rest goes to the API's handlers.
    async fn execute(
        &mut self,
        v: &Verified<'_>,
        req: &RequestFrame<'_>,
        frame: &[u8],
        stream: Option<StreamKey>,
        out: &mut Vec<u8>,
    ) -> Result<Result<Response, WireError>, MqttError> {
        let (operator, seq, role) = (v.key, v.seq, v.role);
        match &req.body {
            Request::Cancel { id } if role >= req.body.required_role() => {
                let found = self.with_follows(out, |f, say| f.cancel(&operator, *id, say))?;
                Ok(match found {
                    true => Ok(Response::Accepted),
                    false => Err(WireError::Invalid(format!(
                        "no log follow {id} of yours on this board"
                    ))),
                })
            }
            Request::Logs {
                service,
                follow: true,
                ..
            } if role >= req.body.required_role() => {
                if self.follows.full() {
                    return Ok(Err(WireError::Busy));
                }
                let ring = match log_ring(&self.ctx, *service) {
                    Ok(ring) => ring,
                    Err(e) => return Ok(Err(e)),
                };
                // The position before the tail: no line falls in between.
                let (_, next) = ring.tail_with_seq(0);
                let first = handle_guarded(&self.ctx, role, &req.body);
                if first.is_ok() {
                    self.follows
                        .start(seq, req.id, operator, ring, next, stream, Instant::now());
                }
                Ok(first)
            }
            body if runs_blocking(body) => {
                Ok(handle_blocking(self.ctx.clone(), role, frame.to_vec()).await)
            }
            body => Ok(handle_guarded(&self.ctx, role, body)),
        }
    }

    /// New lines for each log follow; `End` for those whose lease ran out.
    pub(super) fn follow_tick(&mut self, out: &mut Vec<u8>) -> Result<(), MqttError> {
        self.with_follows(out, |f, say| f.tick(Instant::now(), say))
    }

    /// Run `act` on the follows, then publish what they said.
    fn with_follows<R>(
        &mut self,
        out: &mut Vec<u8>,
        act: impl FnOnce(&mut Follows, &mut dyn FnMut(Emit<'_>)) -> R,
    ) -> Result<R, MqttError> {
        let mut follows = std::mem::take(&mut self.follows);
        let mut said = Vec::new();
        let result = act(&mut follows, &mut |e| {
            said.push((e.seq, self.follow_message(e)))
        });
        self.follows = follows;
        for (seq, payload) in said {
            self.publish(out, &topic::resp(&self.device), &payload, false, Some(seq))?;
        }
        Ok(result)
    }

    /// One message of a follow: a plain `Answer`, or for a sealed follow a
    /// `SealedStream` under its stream key and number.
    fn follow_message(&self, e: Emit<'_>) -> Vec<u8> {
        let Some((key, n)) = e.seal else {
            return self.answer(e.seq, e.id, Ok(e.body));
        };
        let response = response_bytes(e.id, Ok(e.body));
        match key.seal(n, &response) {
            Ok(ciphertext) => self.signed(DeviceMessage::SealedStream {
                seq: e.seq,
                n,
                ciphertext: &ciphertext,
            }),
            Err(err) => self.signed(DeviceMessage::Refused {
                seq: e.seq,
                reason: &err.to_string(),
            }),
        }
    }

    /// A signed answer to command `seq` (request id `id`).
    fn answer(&self, seq: u64, id: u32, body: Result<Response, WireError>) -> Vec<u8> {
        let response = response_bytes(id, body);
        self.signed(DeviceMessage::Answer {
            seq,
            response: &response,
        })
    }

    /// A signed answer to a sealed command: sealed with its answer key.
    fn sealed_answer(
        &self,
        seq: u64,
        id: u32,
        body: Result<Response, WireError>,
        key: OneUseKey,
    ) -> Vec<u8> {
        let response = response_bytes(id, body);
        match key.seal(&response) {
            Ok(ciphertext) => self.signed(DeviceMessage::SealedAnswer {
                seq,
                ciphertext: &ciphertext,
            }),
            Err(e) => self.signed(DeviceMessage::Refused {
                seq,
                reason: &e.to_string(),
            }),
        }
    }
}

/// A response frame's bytes; one too large for a frame becomes an error.
fn response_bytes(id: u32, body: Result<Response, WireError>) -> Vec<u8> {
    let bytes = ResponseFrame { id, body }.encode();
    if bytes.len() <= MAX_RESPONSE_FRAME {
        return bytes;
    }
    ResponseFrame {
        id,
        body: Err(WireError::Device("response too large".into())),
    }
    .encode()
}
