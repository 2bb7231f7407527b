//! Multi-node tests: one binary, one file per test, numbered as in openraft (`t1x` a healthy
//! cluster, `t2x` crashes, partitions and restarts, `t3x` membership changes, `t4x` MQTT across
//! nodes, `t5x` the REST API's MQTT operations across nodes, `t9x` regressions). Every test starts its own cluster (the harness runs one at a time) and
//! ends with `cluster.invariant_check()`.

mod fixtures;

mod t10_three_nodes_form_a_cluster;
mod t11_any_node_serves_every_rest_endpoint;
mod t12_a_token_from_one_node_works_on_another;
mod t13_disabling_a_device_on_one_node_kicks_it_off_another;
mod t14_retained_set_on_one_node_is_delivered_on_another;
mod t15_metrics_show_the_cluster_and_a_lost_peer;
mod t20_leader_killed_under_write_load;
mod t21_a_cut_off_minority_refuses_writes_and_keeps_serving_mqtt;
mod t22_full_cluster_restart_recovers_everything;
mod t23_a_node_far_behind_catches_up_by_snapshot;
mod t24_a_lost_nodes_clients_go_offline;
mod t25_a_frozen_leader_holds_writes_no_longer_than_an_election;
mod t26_persistent_sessions_through_rolling_restarts;
mod t27_a_node_back_after_a_silent_death_hears_from_its_peers;
mod t28_a_stopping_node_hands_its_sessions_over;
mod t30_a_fourth_node_joins_as_learner_and_is_removed;
mod t31_a_wiped_node_rejoins;
mod t32_a_learner_that_stops_leaves_and_comes_back;
mod t40_messages_cross_nodes;
mod t41_overlapping_subscriptions_across_nodes;
mod t42_a_shared_group_spread_over_nodes;
mod t43_a_client_id_taken_on_another_node;
mod t44_a_persistent_session_resumes_on_another_node;
mod t45_retained_and_will_across_nodes;
mod t46_acknowledged_messages_survive_the_publishers_node;
mod t47_offline_queues_survive_their_nodes_restart;
mod t48_a_route_announced_while_a_link_was_down;
mod t49_load_while_a_follower_restarts;
mod t50_proxy_subscriptions_on_any_node;
mod t51_a_restarted_node_knows_the_routes_before_it_serves;
mod t52_any_node_lists_and_kicks_every_client;
mod t53_a_rule_made_on_one_node_acts_on_every_node;
