//! Test infrastructure shared by the cluster tests: a real `redis-server` the test owns
//! (start, `kill -9`, restart on the same port and data), and a round-robin TCP load
//! balancer to put in front of gateway nodes.

#![allow(dead_code)]

pub mod lb;
pub mod redis;
pub mod signals;
