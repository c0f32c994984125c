//! Loopback addresses for tests that must bind fixed ports: one owner per address, so the
//! tests of one binary run in parallel (and beside the benchmark) without colliding.
//!
//! Every other test binds `127.0.0.1` port 0 (an emulator's default) and needs no entry.
//!
//! | address | owner | fixed ports |
//! |---|---|---|
//! | 127.0.0.2 | [`INTEROP`]: `iothub-emulator` test `interop` (official Python and Node SDKs) | 443, 5671 |
//! | 127.0.0.3 | [`BENCH`]: the benchmark driver, `bench/src/driver.rs` (its own constant) | 443, 5671 |
//! | 127.0.0.4 | [`DEVICE_INTEROP`]: `iothub-tests` test `device_interop` (official device SDKs) | 443, 8883, 5671 |
//! | 127.0.0.5 | [`PARITY`]: `iothub-tests` test `parity` (the Python SDK's C2D) | 5671 |

use std::net::Ipv4Addr;

/// The emulator's interop suite: the Node SDK only dials 443, and both SDKs dial 5671 for
/// cloud-to-device messages.
pub const INTEROP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// Reserved for the benchmark driver, which binds 443 and 5671 here in its own process.
pub const BENCH: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// The device interop suite: the official device SDKs dial only 8883 (MQTT) and 443 (MQTT
/// over WebSockets), and the registry's cloud-to-device messages go to 5671 on the same host.
pub const DEVICE_INTEROP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);

/// The parity test's Python-facing emulator: the Python SDK dials 5671 for C2D, whatever
/// the REST port.
pub const PARITY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
