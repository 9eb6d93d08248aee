//! [`crate::store_suite!`]: one `#[tokio::test]` per behaviour of the store contract.

/// Defines one `#[tokio::test]` per behaviour, each on a fresh store from `$make().await`.
#[macro_export]
macro_rules! store_suite {
    ($make:path) => {
        $crate::store_suite!(@tests $make;
            round_trip_of_typed_values,
            concurrent_increments_are_not_lost,
            concurrent_updates_are_not_lost,
            concurrent_writes_to_different_keys_survive,
            write_racing_destroy_leaves_no_record,
            blind_write_after_destroy_leaves_no_record,
            idle_expiry,
            absolute_expiry,
            refresh_is_throttled,
            a_session_keeps_its_own_expiry,
            renewal_alias_is_read_only_for_the_grace_window,
            privilege_cycle_leaves_no_old_id,
            cycle_through_layer,
            renewal_through_layer,
            revoke_also_ends_aliases,
            every_write_path_honours_the_limits,
            anonymous_sessions_expire_sooner,
            cancelled_login_leaves_one_whole_session,
            per_user_list_and_revoke,
            revoke_others_spares_the_callers_renewed_session,
            size_limit_writes_nothing,
            id_collision_on_create,
            destroy_is_idempotent_and_an_alias_ends_only_itself,
            round_trip_budget,
            flashes_are_shown_once,
            stats_count_live_sessions,
            scan_lists_every_session,
            an_end_keeps_its_reason,
            an_end_keeps_its_reason_in_the_same_step,
            end_user_keeps_each_reason,
            ending_an_expired_session_is_no_logout,
            an_expiry_says_which_deadline_passed_or_nothing,
            each_end_explains_itself_to_the_next_request,
            bad_increment_changes_nothing,
        );
    };
    (@tests $make:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store: $crate::testing::DynStore = ::std::sync::Arc::new($make().await);
                $crate::testing::$name(store).await;
            }
        )*
    };
}
