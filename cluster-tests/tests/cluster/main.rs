//! Multi-node tests: one binary, one file per test, numbered as in openraft (`t1x` a healthy
//! cluster, `t2x` restarts, `t5x` faults, `t9x` regressions). Every test starts its own cluster
//! (the harness runs one at a time) and ends with `cluster.invariant_check()`.

mod fixtures;

mod t10_three_nodes_form_a_cluster;
mod t11_any_node_serves_every_rest_endpoint;
mod t12_a_token_from_one_node_works_on_another;
mod t13_disabling_a_device_on_one_node_kicks_it_off_another;
mod t14_retained_set_on_one_node_is_delivered_on_another;
mod t22_full_cluster_restart_recovers_everything;
