#!/usr/bin/env bash
# Mutation check for the safety fixes of issues 8 and 10, the input validation of issue 9,
# the TLS identities of issue 11, the edges of issue 17 (cluster identity included) and the
# roles and limits of issue 18:
# each mutant undoes one fix in a scratch worktree of HEAD, and the test named beside it must then FAIL. Prints one line per mutant:
# "caught" (the test failed, as it must) or "MISSED".
#
#   scripts/mutants.sh            # every mutant
#   scripts/mutants.sh NAME...    # some of them
#   scripts/mutants.sh --check    # build nothing, in seconds: fail if an expression no longer
#                                 # changes its file or names a test target that does not exist
#   scripts/mutants.sh --check --tests   # also fail if a filter matches no test (lists the
#                                 # tests, building them if they are not; CI runs it after them)
#
# PAXKV_SIM_SEEDS (default 60) sets how many simulation seeds a simulation mutant runs.
# RELEASE=1 builds and runs the tests in release: the simulation runs about 20 times faster,
# and each mutant costs a release build of the crate instead (the whole list in under an hour).
set -uo pipefail
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
work=${TMPDIR:-/tmp}/paxkv-mutants
# The mutants build in a target directory of their own (set below, after --check): --check
# lists the tests of the checkout's own build, which CI has just made. (It used this one too
# until the fifteenth session, which found a clean clone's CI rebuilding every test target for
# the listing, ten minutes more, where a warm mutants directory had hidden it.)
mutants_target=${CARGO_TARGET_DIR:-${TMPDIR:-/tmp}/paxkv-mutants-target}
export PAXKV_SIM_SEEDS=${PAXKV_SIM_SEEDS:-60}

# One mutant per entry, fields separated by " @@ ": name @@ file @@ sed expression @@ the
# arguments of the cargo test that must catch it.
mutants=(
  'unknown-counted-as-no-vote-unit @@ src/paxos/proposer.rs @@ s/let unknown = promises.values().filter(|v| v.fast_unknown).count().min(1);/let unknown = 0;/ @@ --lib a_fast_ballot_state_is_carried_past'
  'floor-recreated-after-overflow @@ src/paxos/register.rs @@ s/^        None if state.floors_overflowed => return,$// @@ --lib a_dropped_floor_is_never_replaced'
  'replies-not-matched-to-instance @@ src/paxos/proposer.rs @@ s/if to != self.id || !self.cfg.nodes.contains(\&from) {/if !self.cfg.nodes.contains(\&from) {/ @@ --lib sim'
  'replies-not-matched-unit @@ src/paxos/proposer.rs @@ s/if to != self.id || !self.cfg.nodes.contains(\&from) {/if !self.cfg.nodes.contains(\&from) {/ @@ --lib replies_to_an_earlier_proposer_instance'
  'unavailable-stays-in-batch @@ src/paxos/proposer.rs @@ s/^            p.accept_sent$/            true/ @@ --lib sim'
  'unavailable-stays-in-batch-unit @@ src/paxos/proposer.rs @@ s/^            p.accept_sent$/            true/ @@ --lib a_command_answered_unavailable_is_never_applied'
  'no-settle-after-fast-write @@ src/paxos/proposer.rs @@ s/if ballot == Ballot::FAST \&\& self.cfg.settle_fast_writes {/if false {/ @@ --lib a_first_write_on_a_fresh_key_takes_one_round_trip'
  'clock-ordered-dedup @@ src/paxos/register.rs @@ s/Some(floor) => id.seq <= floor.seq,/Some(_) => true,/ @@ --lib one_clients_writes_never_get'
  'merge-due-by-overlay-only @@ src/storage/mod.rs @@ s/^                self.next_seq >= MERGE_RECORDS as u64$/                false/ @@ --lib a_few_keys_written_many_times'
  'merge-failure-fails-the-write @@ src/storage/mod.rs @@ s/^            self.try_merge();$/            self.merge()?;/ @@ --lib a_failed_merge_loses_nothing'
  'no-frame-validation @@ src/actors/network.rs @@ s/if let Err(e) = frame.validate(\&shared.config) {/if let Err(e) = Ok::<(), Error>(()) {/ @@ --test transport_bad_input a_contradictory_paxos_message'
  'accept-next-unchecked @@ src/messages.rs @@ s/let next_ok = next.is_none_or(|n| n > \*ballot \&\& own_classic(n));/let next_ok = true;/ @@ --test transport_bad_input a_contradictory_paxos_message'
  'adopt-ignores-promise @@ src/paxos/acceptor.rs @@ s/^        if classic \&\& peer.accepted > record.accepted \&\& peer.accepted >= record.promised {$/        if classic \&\& peer.accepted > record.accepted {/ @@ --lib adopting_is_idempotent'
  'remembered-writes-not-shed-unit @@ src/paxos/register.rs @@ s/let forgotten = (writes.len() + 1).saturating_sub(REMEMBERED_WRITES);/let forgotten = usize::from(writes.len() >= REMEMBERED_WRITES);/ @@ --lib a_state_remembering_more_writes_sheds'
  'recent-writes-forget-their-outcomes @@ src/paxos/register.rs @@ s/return Ok(seen.outcome.into());/return Ok(Outcome::Put { version: 0 });/ @@ --lib paxos::register'
  'recent-client-named-twice-accepted @@ src/paxos/recent.rs @@ s/if clients.contains(\&id) {/if false {/ @@ --lib paxos::recent'
  'recent-long-varint-accepted @@ src/paxos/recent.rs @@ s/if i > 0 \&\& b == 0 {/if false {/ @@ --lib paxos::recent'
  'recent-version-not-a-difference-sim @@ src/paxos/recent.rs @@ s/put_varint(\&mut bytes, zigzag(number.wrapping_sub(last_number)));/put_varint(\&mut bytes, zigzag(number));/ @@ --lib sim'
  'proposer-timer-left-armed @@ src/actors/proposer.rs @@ /if let Some((_, handle)) = self.timer.take() {/{n;s/ctx.cancel_future(handle);/let _ = handle;/} @@ --test serving a_round_that_finishes_in_time_leaves_its_proposer_no_timer'
  'rare-requests-inline @@ src/actors/router.rs @@ s/body => Box::pin(self.serve_rest(body)).await,/body => self.serve_rest(body).await,/ @@ --lib a_key_request_task_stays_small'
  'non-member-proposer-sends @@ src/paxos/proposer.rs @@ s/let refusal = match (self.cfg.epoch, self.cfg.member) {/let refusal = match (self.cfg.epoch, true) {/ @@ --lib a_proposer_of_a_node_that_is_no_member'
  'non-member-proposer-sends-sim @@ src/paxos/proposer.rs @@ s/let refusal = match (self.cfg.epoch, self.cfg.member) {/let refusal = match (self.cfg.epoch, true) {/ @@ --lib seeded_first_writes_raced'
  'lease-due-in-map-order @@ src/paxos/lease.rs @@ s/        due.sort_unstable_by_key(|d| d.id);// @@ --lib a_seed_replays_exactly'
  'head-ignores-lost-fast-vote @@ src/storage/mod.rs @@ s/        Ballot::ZERO => decode(key, bytes)?.fast_unknown,/        Ballot::ZERO => false,/ @@ --lib a_head_scan_reads'
  'epoch-zero-proposer-sends-unit @@ src/paxos/proposer.rs @@ s/^            (0, _) => Some($/            (0, _) if false => Some(/; s/^            (epoch, false) => Some(format!($/            (epoch, false) if epoch > 0 => Some(format!(/ @@ --lib a_proposer_with_no_membership_installed'
  'epoch-zero-proposer-sends-sim @@ src/paxos/proposer.rs @@ s/^            (0, _) => Some($/            (0, _) if false => Some(/; s/^            (epoch, false) => Some(format!($/            (epoch, false) if epoch > 0 => Some(format!(/ @@ --lib sim'
  'record-checksum-unsalted @@ src/storage/mod.rs @@ s/let crc = crc32fast::hash(buf) ^ FORMAT_SALT;/let crc = crc32fast::hash(buf);/ @@ --lib storage::'
  'retry-ignores-floors @@ src/paxos/register.rs @@ s/        let refused = match state.floors/        let refused = false \&\& match state.floors/ @@ --lib a_write_applies_once'
  'first-attempt-below-floor-applied @@ src/paxos/register.rs @@ s/            Some(floor) => id.seq <= floor.seq,/            Some(floor) => maybe_applied \&\& id.seq <= floor.seq,/ @@ --lib sim'
  'first-attempt-below-floor-applied-unit @@ src/paxos/register.rs @@ s/            Some(floor) => id.seq <= floor.seq,/            Some(floor) => maybe_applied \&\& id.seq <= floor.seq,/ @@ --lib a_delayed_first_attempt_of_a_write_applied_by_its_retry'
  'retire-without-handshake @@ src/actors/supervisor.rs @@ s/table.retiring.insert(key, entry);/drop(entry);/ @@ --test serving a_retired_acceptor_is_never_replaced_while_it_still_runs'
  # issue 23: peers' messages delivered to a live key's actor without the supervisor
  'routes-never-direct @@ src/actors/supervisor.rs @@ s/Arc::new(move |msg| match routes.deliver(msg) {/Arc::new(move |msg| match Some(msg) {/ @@ --test serving a_live_keys_messages_skip_the_supervisor'
  'routes-commands-through-the-supervisor @@ src/actors/supervisor.rs @@ s/let submit = self.routes.submit(\&key, submit)?;/let submit = Some(submit)?;/ @@ --test serving a_live_keys_messages_skip_the_supervisor'
  'routes-take-foreign-frames @@ src/actors/routes.rs @@ s/if !admission::same_cluster(self.view.cluster(), envelope.cluster) {/if false {/ @@ --test membership_changes a_prepare_of_an_older_epoch_or_another_cluster'
  'routes-vote-while-not-voting @@ src/actors/routes.rs @@ s/\&\& !(self.readiness.is_voting() \&\& self.view.admits_key(\&envelope.key))/\&\& false/ @@ --test membership_who_may_vote a_wiped_node_never_votes'
  # issue 23: thrifty rounds, and a client that skips a silent node until it answers
  'client-never-gives-up-a-silent-connection @@ src/client.rs @@ s/            Some(sent) => return sent.elapsed() >= SILENCE_PING_TIMEOUT,/            Some(sent) => return false \&\& sent.elapsed() >= SILENCE_PING_TIMEOUT,/ @@ --test serving a_node_that_stops_answering'
  'client-never-probes @@ src/client.rs @@ s/        if !self.inner.probing\[node\].swap(true, Ordering::AcqRel) {/        if false \&\& !self.inner.probing[node].swap(true, Ordering::AcqRel) {/ @@ --test serving a_node_that_stops_answering'
  'thrifty-never-widens-unit @@ src/paxos/proposer.rs @@ s/^    fn widen(\&mut self, silent: bool, out: \&mut Vec<Effect>) {$/    fn widen(\&mut self, silent: bool, out: \&mut Vec<Effect>) { return;/ @@ --lib a_thrifty_round_asks_the_rest_when_one'
  'thrifty-never-widens-sim @@ src/paxos/proposer.rs @@ s/^    fn widen(\&mut self, silent: bool, out: \&mut Vec<Effect>) {$/    fn widen(\&mut self, silent: bool, out: \&mut Vec<Effect>) { return;/ @@ --lib sim'
  'thrifty-first-majority-by-node @@ src/paxos/proposer.rs @@ s/let first = first_majority(n, quorum, self.cfg.spread);/let first = first_majority(n, quorum, u64::from(self.cfg.node));/ @@ --lib thrifty_rounds_ask_the_keys_majority'
  'thrifty-read-counts-a-majority-of-the-asked-sim @@ src/paxos/proposer.rs @@ s/match read_answers(replies, n, quorums.classic(), quorums.fast(), known) {/match read_answers(replies, n, if *widened { quorums.classic() } else { quorums.classic() - 1 }, quorums.fast(), known) {/ @@ --lib sim'
  'thrifty-read-counts-a-majority-of-the-asked-unit @@ src/paxos/proposer.rs @@ s/match read_answers(replies, n, quorums.classic(), quorums.fast(), known) {/match read_answers(replies, n, if *widened { quorums.classic() } else { quorums.classic() - 1 }, quorums.fast(), known) {/ @@ --lib a_thrifty_read_whose_majority_disagrees'
  'thrifty-widened-accept-another-state-sim @@ src/paxos/proposer.rs @@ /let again = PeerMessage::Accept {/,/};/s/state: state.clone(),/state: Register::default(),/ @@ --lib sim'
  # issue 23: reads that carry no remembered writes
  'light-read-repairs-sim @@ src/paxos/proposer.rs @@ s/.find(|v| v.accepted == ballot \&\& v.full)/.find(|v| v.accepted == ballot)/ @@ --lib sim'
  'light-read-repairs-unit @@ src/paxos/proposer.rs @@ s/.find(|v| v.accepted == ballot \&\& v.full)/.find(|v| v.accepted == ballot)/ @@ --lib a_quick_read_answers_in_one_round_trip'
  'read-reply-at-the-fast-ballot-unit @@ src/paxos/acceptor.rs @@ s/PeerMessage::Read { read } if record.accepted != Ballot::FAST => PeerMessage::ReadReply {/PeerMessage::Read { read } => PeerMessage::ReadReply {/ @@ --lib a_read_is_answered_without_remembered_writes'
  'read-reply-at-the-fast-ballot-accepted @@ src/messages.rs @@ s/                    || \*accepted == Ballot::FAST$// @@ --lib a_read_reply_at_the_fast_ballot'
  'read-answers-count-light-states-at-the-fast-ballot-unit @@ src/paxos/proposer.rs @@ s/.filter(|v| v.accepted() == Ballot::FAST \&\& v.full())/.filter(|v| v.accepted() == Ballot::FAST)/ @@ --lib light_states_at_the_fast_ballot'
  'fast-duplicate-confirms-the-promise-unit @@ src/paxos/acceptor.rs @@ s/^                        promised: Ballot::FAST,$/                        promised: self.record.promised,/ @@ --lib a_repeated_fast_accept_never_lends'
  'fast-duplicate-confirms-the-promise-sim @@ src/paxos/acceptor.rs @@ s/^                        promised: Ballot::FAST,$/                        promised: self.record.promised,/ @@ --lib seeded_first_writes_retried'
  # issue 10: membership
  'fast-open-during-a-change @@ src/paxos/membership.rs @@ s/^        self.phase.is_none()$/        true/ @@ --lib sim'
  'fast-open-during-a-change-aimed @@ src/paxos/membership.rs @@ s/^        self.phase.is_none()$/        true/ @@ --lib seeded_first_writes_raced_while'
  'close-fast-settles-nothing-aimed @@ src/paxos/driver.rs @@ s/Some(phase) => {$/Some(Phase::CloseFast) => self.write(current, version, next),\n            Some(phase) => {/ @@ --lib seeded_first_writes_raced_while'
  'sim-close-fast-scans-nothing-aimed @@ src/paxos/sim.rs @@ s/if !s.fast_only || r.accepted == Ballot::FAST {/if !s.fast_only {/ @@ --lib seeded_first_writes_raced_while'
  'acceptor-answers-older-epochs-aimed @@ src/paxos/admission.rs @@ s/    if msg_epoch < epoch {/    if msg_epoch < epoch \&\& false {/ @@ --lib seeded_first_writes_raced_while'
  'no-install-barrier-aimed @@ src/paxos/driver.rs @@ s/        if count < needed {/        if count < needed \&\& false {/ @@ --lib seeded_first_writes_raced_while'
  'add-takes-stores-with-records-aimed @@ src/paxos/membership.rs @@ s/        if joining.holds_records {/        if false \&\& joining.holds_records {/ @@ --lib seeded_first_writes_raced_while'
  'replies-not-matched-to-instance-aimed @@ src/paxos/proposer.rs @@ s/if to != self.id || !self.cfg.nodes.contains(\&from) {/if !self.cfg.nodes.contains(\&from) {/ @@ --lib seeded_first_writes_raced_while'
  # issue 23: a state this proposer saw chosen at the fast ballot, read from a majority
  'known-fast-never-used @@ src/paxos/proposer.rs @@ s/        if holding >= quorum {/        if holding >= quorum \&\& false {/ @@ --lib the_writer_of_a_state_chosen'
  'known-fast-any-state-unit @@ src/paxos/proposer.rs @@ s/ \&\& known == Some(v.state())$// @@ --lib a_known_fast_state_counts_only'
  'known-fast-any-state-sim @@ src/paxos/proposer.rs @@ s/ \&\& known == Some(v.state())$// @@ --lib sim'
  'known-fast-light-states @@ src/paxos/proposer.rs @@ s/    v.accepted() == Ballot::FAST \&\& v.full() \&\& /    v.accepted() == Ballot::FAST \&\& / @@ --lib a_known_fast_state_counts_only'
  'known-fast-counts-lost-votes @@ src/paxos/proposer.rs @@ s/ \&\& !v.fast_unknown() \&\& known == Some/ \&\& known == Some/ @@ --lib a_known_fast_state_counts_only'
  'fast-open-during-a-change-unit @@ src/paxos/membership.rs @@ s/^        self.phase.is_none()$/        true/ @@ --lib a_change_passes_through_close_fast'
  # the scripted runs (paxos::sim::scenarios): the same rules, forced every time
  'fast-open-during-a-change-scenario @@ src/paxos/membership.rs @@ s/^        self.phase.is_none()$/        true/ @@ --lib a_split_fast_vote_cast_after_the_close_fast_scan'
  'close-fast-settles-nothing-scenario @@ src/paxos/driver.rs @@ s/Some(phase) => {$/Some(Phase::CloseFast) => self.write(current, version, next),\n            Some(phase) => {/ @@ --lib a_split_fast_vote_of_the_stable_epoch'
  'sim-close-fast-scans-nothing-scenario @@ src/paxos/sim.rs @@ s/if !s.fast_only || r.accepted == Ballot::FAST {/if !s.fast_only {/ @@ --lib a_split_fast_vote_of_the_stable_epoch'
  'replies-not-matched-to-instance-scenario @@ src/paxos/proposer.rs @@ s/if to != self.id || !self.cfg.nodes.contains(\&from) {/if !self.cfg.nodes.contains(\&from) {/ @@ --lib replies_to_a_crashed_proposer'
  'acceptor-answers-older-epochs-scenario @@ src/paxos/admission.rs @@ s/    if msg_epoch < epoch {/    if msg_epoch < epoch \&\& false {/ @@ --lib an_acceptor_two_changes_ahead'
  'acceptor-answers-older-epochs-sim @@ src/paxos/admission.rs @@ s/    if msg_epoch < epoch {/    if msg_epoch < epoch \&\& false {/ @@ --lib sim'
  'no-install-barrier-sim @@ src/paxos/driver.rs @@ s/        if count < needed {/        if count < needed \&\& false {/ @@ --lib sim'
  'no-install-barrier-unit @@ src/paxos/driver.rs @@ s/        if count < needed {/        if count < needed \&\& false {/ @@ --lib a_barrier_without_a_majority'
  'close-fast-settles-nothing-sim @@ src/paxos/driver.rs @@ s/Some(phase) => {$/Some(Phase::CloseFast) => self.write(current, version, next),\n            Some(phase) => {/ @@ --lib sim'
  'no-rescan-sim @@ src/paxos/driver.rs @@ s/fast_only: phase == Phase::CloseFast,/fast_only: true,/ @@ --lib sim'
  'sim-close-fast-scans-nothing @@ src/paxos/sim.rs @@ s/if !s.fast_only || r.accepted == Ballot::FAST {/if !s.fast_only {/ @@ --lib sim'
  'close-fast-settles-nothing @@ src/actors/membership/change.rs @@ s/.filter(|k| !fast_only || k.entries.iter().any(|e| e.accepted == Ballot::FAST))/.filter(|_| !fast_only)/ @@ --test membership_changes a_state_chosen_at_the_fast_ballot_survives'
  'no-rescan @@ src/actors/membership/change.rs @@ s/.filter(|k| !fast_only || k.entries.iter().any(|e| e.accepted == Ballot::FAST))/.filter(|k| fast_only \&\& k.entries.iter().any(|e| e.accepted == Ballot::FAST))/ @@ --test membership_changes a_dead_node_is_replaced'
  'settle-ignores-the-joining-node @@ src/paxos/proposer.rs @@ s/.chain(cfg.joining.iter())/.chain([].iter())/ @@ --lib a_settle_ends_only_once_the_joining_voter_accepted'
  'view-published-before-durable @@ src/actors/acceptor.rs @@ s/^        let durable = self.persist(record.clone());$/        self.view.publish(record.clone()); let durable = self.persist(record.clone());/ @@ --lib a_read_from_the_view_sees_a_write_only_once'
  'sim-reply-before-commit @@ src/paxos/sim.rs @@ s/^            \*self.faults.entry("write in flight").or_default() += 1;$/            *self.faults.entry("write in flight").or_default() += 1; let early = InFlight { payload: match \&reply.payload { Payload::Paxos(p) => Payload::Paxos(p.clone()), _ => unreachable!() }, key: reply.key.clone(), ..reply }; self.net.push(early);/ @@ --lib seeded_runs_with_membership_changes'
  'sim-read-from-flight @@ src/paxos/sim.rs @@ /fn read_from_durable/,/^    }$/ s/let durable = node.durable.get(key).cloned().unwrap_or_default();/let durable = node.commits[key].record.clone();/ @@ --lib seeded_reads_past_writes'
  'durable-reads-never @@ src/actors/routes.rs @@ s/let view = \&entry.acceptor.as_ref().filter(|a| a.addr.connected())?.view;/let view = \&entry.acceptor.as_ref().filter(|a| a.addr.connected() \&\& false)?.view;/ @@ --test metrics metrics_name_every'
  'durable-read-ignores-epoch @@ src/actors/routes.rs @@ s/if !matches!(admitted, admission::Admission::Step) {/if false \&\& !matches!(admitted, admission::Admission::Step) {/ @@ --test membership_changes a_prepare_of_an_older_epoch'
  'acceptor-answers-older-epochs @@ src/paxos/admission.rs @@ s/    if msg_epoch < epoch {/    if msg_epoch < epoch \&\& false {/ @@ --test membership_changes a_prepare_of_an_older_epoch'
  'wiped-store-votes-unit @@ src/paxos/bootstrap.rs @@ s/        Some(recorded) if recorded == store => Standing::Voter,/        Some(_) => Standing::Voter,/ @@ --lib standing_in_a_membership'
  'rollback-undetected @@ src/paxos/identity.rs @@ s/        if refuses(round.generation, seen) {/        if false \&\& refuses(round.generation, seen) {/ @@ --test membership_who_may_vote a_node_on_an_older_copy'
  'rollback-undetected-sim @@ src/paxos/identity.rs @@ s/        if refuses(round.generation, seen) {/        if false \&\& refuses(round.generation, seen) {/ @@ --lib sim'
  # issue 11: TLS identities
  'tls-off-at-the-listener @@ src/actors/network.rs @@ s/Peer::accept(shared.tls.as_deref(), stream)/Peer::accept(None, stream)/ @@ --test transport_tls an_accept_claiming_node_3'
  'forged-from-accepted @@ src/tls.rs @@ s/(Peer::Node(id), Frame::Peer(envelope)) if envelope.from != \*id => Err(format!(/(Peer::Node(id), Frame::Peer(envelope)) if envelope.from != *id \&\& false => Err(format!(/ @@ --test transport_tls a_peer_with_node_2s_certificate'
  'client-may-send-node-calls @@ src/tls.rs @@ s/(Peer::Client | Peer::Operator, Frame::Call(_)) => {/(Peer::Client | Peer::Operator, Frame::Call(_)) if false => {/ @@ --test transport_tls a_peer_with_node_2s_certificate'
  'reload-does-nothing @@ src/tls.rs @@ s/\*self.current.write().expect("tls lock") = Arc::new(loaded);/drop(loaded);/ @@ --test transport_tls_processes certificates_rotate'
  'sigpipe-kills-nodes @@ src/cli/mod.rs @@ s/if !matches!(cli.command, Command::Node { .. } | Command::Cluster { .. }) {/if true {/ @@ --test transport_tls_processes a_tls_client_that_hangs_up'
  'install-from-outsiders @@ src/tls.rs @@ s/NodeRequest::Install(_) if !is_member(\*id) => {/NodeRequest::Install(_) if false \&\& !is_member(*id) => {/ @@ --test transport_tls an_install_from_a_node_that_is_no_member'
  # issue 17: safety at the edges
  'add-give-up-does-the-rescan @@ src/paxos/membership.rs @@ s/            Some(Change::Add { id, .. }) if \*change == (Change::Remove { id }) => None,/            Some(Change::Add { id, .. }) if false \&\& *change == (Change::Remove { id }) => None,/ @@ --lib sim'
  'add-give-up-does-the-rescan-test @@ src/paxos/membership.rs @@ s/            Some(Change::Add { id, .. }) if \*change == (Change::Remove { id }) => None,/            Some(Change::Add { id, .. }) if false \&\& *change == (Change::Remove { id }) => None,/ @@ --test membership_changes a_joining_node_lost_during_its_rescan'
  'refusal-forgotten-by-the-node @@ src/actors/membership/start.rs @@ s/Ok(MetaAnswer::Refused(Some(why))) => return start.refuse_for_good(\&why, false).await,/Ok(MetaAnswer::Refused(Some(_))) => {}/ @@ --test membership_who_may_vote an_older_copy_stays_refused'
  'unrecorded-store-votes-sim @@ src/paxos/membership.rs @@ s/            Some(0) => key == MEMBERSHIP_KEY,/            Some(0) => true,/ @@ --lib sim'
  'unrecorded-store-votes @@ src/actors/membership/installed.rs @@ s/self.recorded.load(Ordering::Acquire) || key == MEMBERSHIP_KEY/true/ @@ --test membership_who_may_vote a_store_not_yet_recorded'
  'connections-never-closed @@ src/client.rs @@ s/_ = \&mut stopped => break,/_ = std::future::pending::<()>() => break,/ @@ --test membership_who_may_vote a_refused_node_left_waiting'
  'member-commands-stop-at-a-refused-node @@ src/cli/member.rs @@ s/let next_node = matches!(e, Error::NotThisNode(_))/let next_node = false \&\& matches!(e, Error::NotThisNode(_))/ @@ --test membership_who_may_vote the_runbook_for_a_wiped_node'
  'foreign-frames-taken @@ src/paxos/admission.rs @@ s/    mine == theirs \&\& mine != 0/    mine != 0 || theirs == 0/ @@ --test membership_changes a_prepare_of_an_older_epoch_or_another_cluster'
  'foreign-frames-taken-sim @@ src/paxos/admission.rs @@ s/    mine == theirs \&\& mine != 0/    mine != 0 || theirs == 0/ @@ --lib sim'
  'foreign-install-taken-sim @@ src/paxos/membership.rs @@ s/            Some(current) if current.cluster != self.cluster => Err(format!(/            Some(current) if false \&\& current.cluster != self.cluster => Err(format!(/ @@ --lib sim'
  'foreign-calls-served @@ src/paxos/admission.rs @@ s/        same_cluster(mine, caller)$/        true/ @@ --test membership_cluster_identity node_calls_of_another_cluster'
  'foreign-reads-served @@ src/paxos/admission.rs @@ s/        mine == 0 || caller == 0 || mine == caller/        true/ @@ --test membership_cluster_identity node_calls_of_another_cluster'
  'pull-mixes-clusters @@ src/paxos/membership.rs @@ s/        if clusters.len() > 1 {/        if false \&\& clusters.len() > 1 {/ @@ --lib a_pull_takes_the_newest_of_one_cluster_only'
  'joining-store-of-another-cluster @@ src/paxos/membership.rs @@ s/            if theirs.cluster != self.cluster {/            if false \&\& theirs.cluster != self.cluster {/ @@ --lib a_membership_of_another_cluster_is_never_installed'
  'stale-change-not-fenced @@ src/paxos/driver.rs @@ s/if seen != current.epoch {/if false \&\& seen != current.epoch {/ @@ --test membership_changes a_stale_member_change'
  'stale-change-not-fenced-sim @@ src/paxos/driver.rs @@ s/if seen != current.epoch {/if false \&\& seen != current.epoch {/ @@ --lib sim'
  'stale-change-not-fenced-unit @@ src/paxos/driver.rs @@ s/if seen != current.epoch {/if false \&\& seen != current.epoch {/ @@ --lib a_request_fenced_at_an_epoch'
  'record-refused-during-a-change @@ src/actors/membership/start.rs @@ s/^        let mut next = current.clone();$/        if current.phase.is_some() { return Err(Failure::Final(Error::Unavailable("a change".into()))); }\n        let mut next = current.clone();/ @@ --test membership_who_may_vote a_store_is_recorded_even_while'
  'give-up-not-fenced @@ src/paxos/driver.rs @@ s/        if !current.continues(\&self.change) {/        if current.phase.is_none() {/ @@ --test membership_changes a_joining_node_lost_during_its_rescan'
  'give-up-not-fenced-sim @@ src/paxos/driver.rs @@ s/        if !current.continues(\&self.change) {/        if current.phase.is_none() {/ @@ --lib sim'
  'add-give-up-does-the-rescan-unit @@ src/paxos/membership.rs @@ s/            Some(Change::Add { id, .. }) if \*change == (Change::Remove { id }) => None,/            Some(Change::Add { id, .. }) if false \&\& *change == (Change::Remove { id }) => None,/ @@ --lib giving_up_an_add_skips_its_rescan'
  'hello-round-climbs-sim @@ src/paxos/identity.rs @@ s/    match pending {/    match pending.filter(|_| false) {/ @@ --lib sim'
  'hello-round-climbs-unit @@ src/paxos/identity.rs @@ s/    match pending {/    match pending.filter(|_| false) {/ @@ --lib a_round_is_begun_again_until_answered'
  'hello-retry-refused-sim @@ src/paxos/identity.rs @@ s/    if call != 0 \&\& seen.call == call \&\& seen.generation == generation {/    if false {/ @@ --lib sim'
  'older-copy-off-by-one-sim @@ src/paxos/identity.rs @@ s/^    seen >= generation$/    seen > generation/ @@ --lib sim'
  'sim-refusal-mark-ignored @@ src/paxos/sim.rs @@ s/^        if n.marked {$/        if false \&\& n.marked {/ @@ --lib sim'
  'join-ignored @@ src/actors/membership/start.rs @@ s/^        targets.extend(join.iter().map(|a| (0, \*a)));$/        let _ = join;/ @@ --test membership_changes a_node_whose_old_peers_are_all_gone'
  'add-takes-stores-with-records-sim @@ src/paxos/membership.rs @@ s/        if joining.holds_records {/        if false \&\& joining.holds_records {/ @@ --lib sim'
  'add-takes-stores-with-records @@ src/paxos/membership.rs @@ s/        if joining.holds_records {/        if false \&\& joining.holds_records {/ @@ --test membership_cluster_identity a_store_that_served_another_cluster'
  'bootstrap-by-a-majority-sim @@ src/paxos/bootstrap.rs @@ s/    if missing.is_empty() {/    if missing.len() <= founding.nodes.len() - (founding.nodes.len() \/ 2 + 1) {/ @@ --lib sim_start'
  'bootstrap-by-a-majority-unit @@ src/paxos/bootstrap.rs @@ s/    if missing.is_empty() {/    if missing.len() <= founding.nodes.len() - (founding.nodes.len() \/ 2 + 1) {/ @@ --lib every_node_of_the_config_new'
  'bootstrap-by-a-majority-test @@ src/paxos/bootstrap.rs @@ s/    if missing.is_empty() {/    if missing.len() <= founding.nodes.len() - (founding.nodes.len() \/ 2 + 1) {/ @@ --test membership_first_start a_new_cluster_is_founded_once_its_late_node_starts'
  'bootstrap-counts-any-empty-sim @@ src/paxos/bootstrap.rs @@ s/            Answer::Empty { founds } if \*founds != 0 \&\& \*founds != founding.cluster => {/            Answer::Empty { founds } if false \&\& *founds != founding.cluster => {/;s/        .filter(|(_, a)| matches!(a, Answer::Empty { founds } if \*founds == founding.cluster))/        .filter(|(_, a)| matches!(a, Answer::Empty { .. }))/ @@ --lib sim_start'
  'bootstrap-counts-any-empty-unit @@ src/paxos/bootstrap.rs @@ s/            Answer::Empty { founds } if \*founds != 0 \&\& \*founds != founding.cluster => {/            Answer::Empty { founds } if false \&\& *founds != founding.cluster => {/;s/        .filter(|(_, a)| matches!(a, Answer::Empty { founds } if \*founds == founding.cluster))/        .filter(|(_, a)| matches!(a, Answer::Empty { .. }))/ @@ --lib empty_nodes_of_another_config'
  'bootstrap-counts-any-empty-test @@ src/paxos/bootstrap.rs @@ s/            Answer::Empty { founds } if \*founds != 0 \&\& \*founds != founding.cluster => {/            Answer::Empty { founds } if false \&\& *founds != founding.cluster => {/;s/        .filter(|(_, a)| matches!(a, Answer::Empty { founds } if \*founds == founding.cluster))/        .filter(|(_, a)| matches!(a, Answer::Empty { .. }))/ @@ --test membership_first_start nodes_whose_configs_differ'
  'bootstrap-as-before-test @@ src/paxos/bootstrap.rs @@ s/            Answer::Empty { founds } if \*founds != 0 \&\& \*founds != founding.cluster => {/            Answer::Empty { founds } if false \&\& *founds != founding.cluster => {/;s/        .filter(|(_, a)| matches!(a, Answer::Empty { founds } if \*founds == founding.cluster))/        .filter(|(_, a)| matches!(a, Answer::Empty { .. }))/;s/    if missing.is_empty() {/    if missing.len() <= founding.nodes.len() - (founding.nodes.len() \/ 2 + 1) {/ @@ --test membership_first_start nodes_whose_configs_differ'
  'removed-node-frames-accepted @@ src/actors/network.rs @@ s/^    if !member {$/    if false {/ @@ --test membership_who_may_vote a_removed_node_that_returns'
  # issue 18: who may do what, and what it may cost
  'pull-from-config-addresses @@ src/actors/membership/installed.rs @@ s/^        self.fetch_and_install(\&others_of(\&m, me)).await$/        self.fetch_and_install(\&[others_of(\&m, me), self.config.addrs().into_iter().map(|a| (0, a)).collect()].concat()).await/ @@ --test transport_tls a_removed_nodes_key_at_its_config_address'
  'member-change-any-certificate @@ src/tls.rs @@ s/            (_, Frame::Request(request)) if request.body.is_member_change() => Err(format!(/            (_, Frame::Request(request)) if false \&\& request.body.is_member_change() => Err(format!(/ @@ --test transport_tls a_membership_change_needs_the_operators'
  'handshakes-per-source-unlimited @@ src/actors/network.rs @@ s/PerSource::new(config.limits.max_handshakes_per_source)/PerSource::new(usize::MAX)/ @@ --test transport_limits idle_sockets_from_one_host'
  'inbox-given-back-on-delivery @@ src/actors/routes.rs @@ s/^\( *\)inbox,$/\1inbox: None,/ @@ --test transport_limits peer_frames_waiting_for_a_slow_acceptor'
  'no-byte-budget @@ src/actors/network.rs @@ s/    let reserved = reserved_for(\&call, request_bytes, \&shared.config);/    let reserved = 0;/ @@ --test transport_byte_budget a_connection_that_never_reads'
  # issue 20: listing (the rule is paxos::listing's, run by the runtime and the simulation)
  'list-trusts-one-copy @@ src/paxos/listing.rs @@ s/QuickReadOf::Undecided | QuickReadOf::Impossible => None,/QuickReadOf::Undecided | QuickReadOf::Impossible => covering.clone().flatten().last().map(|r| (r.state.value.clone(), r.state.version)),/ @@ --test listing a_list_through_a_node_that_missed_writes'
  'list-trusts-one-copy-nemesis @@ src/paxos/listing.rs @@ s/QuickReadOf::Undecided | QuickReadOf::Impossible => None,/QuickReadOf::Undecided | QuickReadOf::Impossible => covering.clone().flatten().last().map(|r| (r.state.value.clone(), r.state.version)),/ @@ --test safety_nemesis'
  'list-trusts-one-copy-sim @@ src/paxos/listing.rs @@ s/QuickReadOf::Undecided | QuickReadOf::Impossible => None,/QuickReadOf::Undecided | QuickReadOf::Impossible => covering.clone().flatten().last().map(|r| (r.state.value.clone(), r.state.version)),/ @@ --lib sim'
  'list-leaves-out-undecided-keys @@ src/paxos/listing.rs @@ s/QuickReadOf::Undecided | QuickReadOf::Impossible => None,/QuickReadOf::Undecided | QuickReadOf::Impossible => Some((None, 0)),/ @@ --test safety_nemesis'
  'list-leaves-out-undecided-keys-sim @@ src/paxos/listing.rs @@ s/QuickReadOf::Undecided | QuickReadOf::Impossible => None,/QuickReadOf::Undecided | QuickReadOf::Impossible => Some((None, 0)),/ @@ --lib sim'
  'list-scans-a-minority @@ src/paxos/listing.rs @@ s/    answered >= quorums.classic()/    answered >= 1/ @@ --test listing a_list_is_served_with_two_nodes_down'
  'list-scans-a-minority-sim @@ src/paxos/listing.rs @@ s/    answered >= quorums.classic()/    answered >= 1/ @@ --lib sim'
  'scan-from-a-refused-store @@ src/paxos/listing.rs @@ s/    epoch == caller_epoch \&\& store_confirmed_intact/    epoch == caller_epoch/ @@ --test listing a_wiped_store_answers_no_scan'
  'scan-from-a-refused-store-sim @@ src/paxos/listing.rs @@ s/    epoch == caller_epoch \&\& store_confirmed_intact/    epoch == caller_epoch/ @@ --lib sim'
  # issue 23: the listing's merge, page and scans (paxos::merge and paxos::listing::PageScan, driven by
  # the runtime and by the simulation; the store's scan is the runtime's alone)
  'merge-past-the-horizon @@ src/paxos/merge.rs @@ s/.filter(|k| horizon.as_ref().is_none_or(|h| \*k <= h))/.filter(|_| true)/ @@ --lib a_merge_yields_every_key_once'
  'merge-past-the-horizon-sim @@ src/paxos/merge.rs @@ s/.filter(|k| horizon.as_ref().is_none_or(|h| \*k <= h))/.filter(|_| true)/ @@ --lib sim'
  'merge-takes-pages-out-of-order @@ src/paxos/merge.rs @@ s/if last.is_some_and(|last| e.key() <= last) {/if false {/ @@ --lib a_page_out_of_order_or_behind'
  'list-exhausted-when-its-voters-drop-sim @@ src/paxos/listing.rs @@ /pub fn batch(&mut self)/a if self.started \&\& self.merge.is_done() { return Ok(None); } @@ --lib sim'
  'list-dropped-voter-covers-everything-sim @@ src/paxos/listing.rs @@ s/        if self.alive\[voter\] {/        if true {/ @@ --lib sim'
  'page-says-no-more-while-the-scan-has-more-sim @@ src/paxos/listing.rs @@ s/        self.unoffered > 0 || self.stopped_at.is_some() || !self.merge.is_done()/        self.unoffered > 0 || self.stopped_at.is_some()/ @@ --lib sim'
  'page-ends-past-its-bytes-sim @@ src/paxos/listing.rs @@ s/        !self.items.is_empty() \&\& self.bytes + key.len() + value_bytes + 16 > self.max_bytes/        false/ @@ --lib sim'
  'scan-says-no-more-at-its-limit @@ src/storage/mod.rs @@ /if records.len() == limit {/{n;s/more = true;/more = false;/} @@ --lib a_prefix_scan_pages_in_key_order'
  'scan-decodes-past-its-limit @@ src/storage/mod.rs @@ /if records.len() == limit {/{n;n;s/return Ok(false);/decode(key, raw)?; return Ok(false);/} @@ --lib a_prefix_scan_decodes_no_record_past'
  # a page's work bounded by the page: it ends once it has passed over list_max_skipped keys
  'page-skips-unbounded @@ src/paxos/listing.rs @@ s/        self.skipped >= self.sizes.skipped/        false/ @@ --test listing a_page_that_passed_over_its_bound'
  'page-skips-unbounded-unit @@ src/paxos/listing.rs @@ s/        self.skipped >= self.sizes.skipped/        false/ @@ --lib a_page_ends_where_it_passed_over'
  'page-cut-says-no-more-unit @@ src/paxos/listing.rs @@ s/        self.unoffered > 0 || self.stopped_at.is_some() || !self.merge.is_done()/        self.unoffered > 0 || !self.merge.is_done()/ @@ --lib a_page_cut_among_the_clusters_own_keys'
  'page-cut-says-no-more-sim @@ src/paxos/listing.rs @@ s/        self.unoffered > 0 || self.stopped_at.is_some() || !self.merge.is_done()/        self.unoffered > 0 || !self.merge.is_done()/ @@ --lib sim'
  'page-cut-keeps-going-unit @@ src/paxos/listing.rs @@ /self.stopped_at = Some(k.key);/{n;s/break;/continue;/} @@ --lib a_page_cut_among_the_clusters_own_keys'
  'page-cut-keeps-going-sim @@ src/paxos/listing.rs @@ /self.stopped_at = Some(k.key);/{n;s/break;/continue;/} @@ --lib sim'
  'page-cut-asks-on-unit @@ src/paxos/listing.rs @@ s/        if self.stopped_at.is_some() {/        if false {/ @@ --lib a_cut_page_asks_no_voter'
  'page-cut-forgotten-sim @@ src/paxos/listing.rs @@ s/        if self.stopped_at.is_some() || (self.started \&\& self.merge.is_done()) {/        if self.started \&\& self.merge.is_done() {/ @@ --lib sim'
  'list-all-writes-pages-unawaited @@ src/cli/list.rs @@ 0,/if !written(\&mut writing).await {/s//if false {/ @@ --test cli list_all_reads_at_most_one_page_ahead'
  'list-all-says-not-where-to-go-on @@ src/cli/list.rs @@ s/if let Some(reached) = after.as_deref().filter(|_| args.all) {/if let Some(reached) = after.as_deref().filter(|_| false) {/ @@ --test cli list_all_cut_off_midway'
  'list-reserves-one-frame @@ src/actors/network.rs @@ s/^const LIST_FRAMES: usize = 5;/const LIST_FRAMES: usize = 1;/ @@ --test transport_list_budget'
  # watches: what a proposer announces (paxos::proposer, "Announcing what is chosen"), checked by
  # every simulated node's watch (paxos::sim, "Watches")
  'announce-before-quorum-sim @@ src/paxos/proposer.rs @@ s/^        out.push(Effect::Broadcast(PeerMessage::Accept {$/        let early = self.changes_made(pred.clone(), \&outcomes, own);\n        if self.announcing \&\& !early.is_empty() {\n            out.push(Effect::Chosen(early));\n        }\n        out.push(Effect::Broadcast(PeerMessage::Accept {/;s/^                out.push(Effect::Chosen(changes));$/                drop(changes);/ @@ --lib sim'
  # watches at run time: the slow-watcher cutoff, the announced changes, the client's sequencer,
  # the prefix watch's start, the reconcile, the watch answers' budgets
  'watch-never-cuts-a-slow-watcher @@ src/actors/watch.rs @@ s/if held > 0 \&\& held + bytes > limit {/if false {/ @@ --test watching a_watcher_that_does_not_read'
  'announce-only-the-last-change @@ src/paxos/proposer.rs @@ s/^        changes.dedup_by_key(|c| c.version);$/        changes.dedup_by_key(|c| c.version);\n        changes.drain(..changes.len().saturating_sub(1));/ @@ --test watching every_change_to_a_hot_key'
  'sequencer-skips-at-once-unit @@ src/watch.rs @@ s/        if seq.held.len() > HELD_PER_KEY {/        if !seq.held.is_empty() {/ @@ --lib a_change_out_of_order_waits'
  'sequencer-keeps-old-versions-unit @@ src/watch.rs @@ s/            if c.version > seq.last {/            if true {/ @@ --lib changes_in_order_are_delivered'
  'prefix-watch-starts-without-deleted-keys @@ src/actors/router.rs @@ s/                    with_deleted: true,/                    with_deleted: false,/ @@ --test watching a_prefix_watch_starts'
  'watch-never-reconciles @@ src/watch.rs @@ s/                _ = reconcile.tick() => match self.read_states_beside(\&mut session, false).await {/                _ = reconcile.tick() => match Ok::<Option<String>, std::result::Result<Error, Gone>>(None) {/ @@ --test watching a_change_whose_announcement_was_lost'
  'watch-answer-made-before-its-budget @@ src/actors/network.rs @@ s/        let reserved = bytes + SMALL_ANSWER_OVERHEAD;/        let reserved = 1;/ @@ --test transport_watch_budget'
  'announcement-in-one-frame @@ src/actors/outbox.rs @@ s/        for changes in frames_of(changes, self.inner.max_value_bytes) {/        for changes in frames_of(changes, usize::MAX) {/ @@ --test watching changes_of_large_values'
  'announce-a-reused-write-ids-value-unit @@ src/paxos/proposer.rs @@ s/            if state.version > before || p.accept_sent {/            if true || state.version > before || p.accept_sent {/ @@ --lib a_write_id_reused_with_another_value'
  'announce-outcome-version-off-by-one-sim @@ src/paxos/types.rs @@ s/^            } => \*version,$/            } => *version + 1,/ @@ --lib sim'
  # issue 21: the HTTP API (driven by Python's standard library)
  'delete-if-ignores-version @@ src/paxos/register.rs @@ s/Command::DeleteIf { expect } => delete_if(state, state.version == \*expect),/Command::DeleteIf { .. } => delete_if(state, true),/ @@ --lib sim'
  'http-idempotency-key-ignored @@ src/actors/http_api.rs @@ s/execute_as(\&key, command, Some(write_id), retry)/execute_as(\&key, command, None.filter(|_| write_id.seq > 0), retry)/ @@ --test http_api python_drives'
  'http-unknown-answered-as-unavailable @@ src/actors/http_api.rs @@ s/(StatusCode::GATEWAY_TIMEOUT, "unknown")/(StatusCode::SERVICE_UNAVAILABLE, "unavailable")/ @@ --test safety_nemesis_processes linearizable_under'
  'http-api-pinned-to-first-member @@ src/actors/membership/installed.rs @@ s/^                options.pinned = false;$/                options.pinned = true;/ @@ --test http_api any_nodes'
  'client-busy-said-unavailable @@ src/client.rs @@ s/^                    (false, true) => Error::Busy(last_error),$/                    (false, true) => Error::Unavailable(last_error),/ @@ --test http_api the_api_says'
  'touch-without-a-value @@ src/paxos/register.rs @@ s/^            let live = lease::LeaseRecord::live(state.value.as_deref()).is_some();$/            let live = state.version > 0;/ @@ --lib sim'
  'lease-expiry-unconditional @@ src/paxos/lease.rs @@ s/Command::DeleteIf { expect: seen }/Command::Delete/ @@ --test leases after_the_lease'
  'lease-end-unconditional @@ src/paxos/lease.rs @@ s/Command::LeaseEnd { expect: seen }/Command::LeaseEnd { expect: 0 }/ @@ --test leases keyed_lease_was_found_due'
  # the keeper in the simulation (paxos::sim::keeper)
  'lease-expiry-unconditional-sim @@ src/paxos/lease.rs @@ s/Command::DeleteIf { expect: seen }/Command::Delete/ @@ --lib sim'
  'lease-end-unconditional-sim @@ src/paxos/lease.rs @@ s/Command::LeaseEnd { expect: seen }/Command::LeaseEnd { expect: 0 }/ @@ --lib sim'
  'lease-new-version-keeps-its-old-clock-sim @@ src/paxos/lease.rs @@ s/^            entry.since = now;$// @@ --lib sim'
  'lease-expiry-at-half-its-ttl-sim @@ src/paxos/lease.rs @@ s/ttl.mul_f64(1.0 + CLOCK_RATE_MARGIN)/ttl.mul_f64(0.5 + CLOCK_RATE_MARGIN)/ @@ --lib sim'
  'lease-release-plan-releases-nothing-sim @@ src/paxos/lease.rs @@ s/.map(|k| (k.to_vec(), Command::Release { lease: id }))/.filter(|_| false).map(|k| (k.to_vec(), Command::Release { lease: id }))/ @@ --lib sim'
  'lease-ended-left-to-its-ender-sim @@ src/paxos/lease.rs @@ s/^                let wait = if s.ended {$/                if s.ended { return false; }\n                let wait = if s.ended {/ @@ --lib sim'
  'lease-release-only-inline @@ src/actors/lease.rs @@ s/^        let (expiry, first) = Expiry::start(due);$/        if due.ended { return Ok(()); }\n        let (expiry, first) = Expiry::start(due);/ @@ --test leases cut_short'
  'lease-write-unfenced @@ src/paxos/register.rs @@ s/            if state.fence != \*fence {/            if false \&\& state.fence != *fence {/ @@ --lib a_leased_write_from_before'
  'lease-fence-never-raised @@ src/paxos/register.rs @@ s/^    if state.version != version_before || matches!(command, Command::Release { .. }) {$/    if false {/ @@ --lib sim'
  'lease-write-sent-once-refused-by-floors @@ src/paxos/register.rs @@ s/^        if refused \&\& !fenced {$/        if refused {/ @@ --lib a_leased_write_sent_once'
  'lease-release-ignores-lease @@ src/paxos/register.rs @@ s/^            let attached = state.lease == Some(\*lease);$/            let attached = true;/ @@ --test leases only_those'
  'lease-put-keeps-lease @@ src/paxos/register.rs @@ s/^            state.lease = None;$/            \/\/ kept/ @@ --test leases only_those'
  # a put without the create condition answers Put, not Cas: every hold fails (caught only as
  # 'too few increments'); a holder that takes a refused create as the lock overlaps others
  'lock-without-exclusion @@ src/cli/lock.rs @@ s/client.put_leased(name, value, Some(0), lease)/client.put_leased(name, value, None, lease)/ @@ --test locks lock_holders'
  'lock-taken-by-a-refused-create @@ src/cli/lock.rs @@ s/^            Ok(Outcome::Cas { version, .. }) => version,$/            Ok(Outcome::Cas { version, .. }) => if version > 0 { held.token = version; return Ok(held); } else { version },/ @@ --test locks lock_holders'
  'keepalive-of-an-unknown-lease-runs-its-round @@ src/paxos/lease.rs @@ s/^        let Some(bytes) = read else { return Ok(None) };$/        let Some(bytes) = read else { return Ok(Some(Duration::from_secs(60))) };/ @@ --test leases never_existed'
  # a keepalive changes no keys: a lease it finds keyed must not be taken as keyless (its expiry would delete it with its keys still attached)
  'lease-keepalive-takes-a-keyed-lease-as-keyless-sim @@ src/paxos/lease.rs @@ s/^                    .is_some_and(|s| s.keyless \&\& s.version + 1 == version),$/                    .is_none_or(|_| true),/ @@ --lib sim'
  # a keepalive on a node that does not track its lease must still touch a live one
  'keepalive-read-takes-a-live-lease-as-gone @@ src/paxos/lease.rs @@ s/^        Ok((!record.ended).then(|| record.ttl()))$/        Ok(record.ended.then(|| record.ttl()))/ @@ --lib which_served_requests'
  # status counts the records logged but not merged yet (a merge comes every 8,192 records)
  'records-stored-counts-the-table-only @@ src/storage/mod.rs @@ s/^            if self.acceptors.get(\&rtxn, key)?.is_none() {$/            if false \&\& self.acceptors.get(\&rtxn, key)?.is_none() {/ @@ --test serving status_counts'
  'watching-for-another-node @@ src/tls.rs @@ s/NodeRequest::Watching { node, .. } if node != id => Err(format!(/NodeRequest::Watching { node, .. } if false \&\& node != id => Err(format!(/ @@ --test transport_tls node_2s_certificate'
  'watchers-per-connection-unlimited @@ src/actors/network.rs @@ s/^        if self.live.len() >= limit {$/        if false {/ @@ --test watching watches_are_limited'
  'watchers-per-node-unlimited @@ src/actors/watch.rs @@ s/^        if registry.watchers.len() >= limit {$/        if false {/ @@ --test watching watches_are_limited'
  'lease-expiry-at-half-its-ttl @@ src/paxos/lease.rs @@ s/ttl.mul_f64(1.0 + CLOCK_RATE_MARGIN)/ttl.mul_f64(0.5 + CLOCK_RATE_MARGIN)/ @@ --test leases a_lease_lives'
  'lease-expiry-at-half-its-ttl-under-faults @@ src/paxos/lease.rs @@ s/ttl.mul_f64(1.0 + CLOCK_RATE_MARGIN)/ttl.mul_f64(0.5 + CLOCK_RATE_MARGIN)/ @@ --test safety_nemesis_processes linearizable_under'
  # a proposer's phase timeout and backoff follow how long its acceptors take (paxos::proposer, "Paced by its acceptors")
  'pace-timeout-fixed @@ src/paxos/proposer.rs @@ s/^        self.pace.timeout(self.cfg.phase_timeout)$/        self.cfg.phase_timeout/ @@ --lib slows_rounds_but_never'
  'pace-timeout-fixed-runtime @@ src/paxos/proposer.rs @@ s/^        self.pace.timeout(self.cfg.phase_timeout)$/        self.cfg.phase_timeout/ @@ --test serving a_disk_slower_than_the_phase_timeout'
  'pace-learns-from-one-late-answer @@ src/paxos/proposer.rs @@ s/^        if answered.count_ones() as usize >= quorum {$/        if answered.count_ones() >= 1 {/ @@ --lib only_a_majoritys_late_answers'
  'pace-backoff-ceiling-fixed @@ src/paxos/proposer.rs @@ s/^        self.mean.max(floor)$/        floor/ @@ --lib slows_rounds_but_never'
  'pace-learns-after-its-majority @@ src/paxos/proposer.rs @@ s/^        if phase.answered.count_ones() as usize >= quorum {$/        if false {/ @@ --lib late_answers_teach_the_pace'
  'pace-promise-times-an-accept @@ src/paxos/proposer.rs @@ s/accept.is_none_or(|k| k == a.accept)/true/ @@ --lib late_answers_teach_the_pace'
  # a client that stops sending a body or reading its answers gives its connection back (actors::http_server, http_api::read_body)
  'http-write-never-stalls @@ src/actors/http_server.rs @@ s/stream.set_write_timeout(Some(write_stall));/stream.set_write_timeout(None);/ @@ --test http_api a_client_that_stops_sending_or_reading'
  'http-body-without-deadline @@ src/actors/http_api.rs @@ s/match tokio::time::timeout_at(until, body.frame()).await {/match Ok::<_, ()>(body.frame().await) {/ @@ --test http_api a_client_that_stops_sending_or_reading'
  'http-body-may-trickle @@ src/actors/http_api.rs @@ s/let until = by.min(tokio::time::Instant::now() + pause);/let until = tokio::time::Instant::now() + pause;/ @@ --test http_api a_client_that_stops_sending_or_reading'
  # input the HTTP API cannot mean is a 400, never taken another way (actors::http_api)
  'http-percent-taken-literally @@ src/actors/http_api.rs @@ s/^    if malformed {$/    if false \&\& malformed {/ @@ --test http_api input_the_api_cannot_mean'
  'http-lease-typo-ignored @@ src/actors/http_api.rs @@ s/let Some(id) = pair.strip_prefix("lease=") else {/let Some(id) = pair.strip_prefix("lease=") else { continue;/ @@ --test http_api input_the_api_cannot_mean'
  'http-watch-checked-after-200 @@ src/actors/http_api.rs @@ s/^        crate::actors::watch::check_watched(\&key, options.prefix, \&self.config)$/        Ok::<(), Error>(())/ @@ --test http_api input_the_api_cannot_mean'
  'http-change-dropped-with-its-client @@ src/actors/http_api.rs @@ s/let change = actix_rt::spawn(async move { router.serve(request).await.result });/let change = async move { Ok::<_, String>(router.serve(request).await.result) };/ @@ --test http_api a_membership_change_whose_client_goes_away'
  'freed-batch-waits-for-its-timeout @@ src/paxos/proposer.rs @@ /^        self.expire(now, out);$/{n;s/^        self.end_accept_if_done(now, out);$//} @@ --lib a_batch_holding_an_answered_settle'
  'answered-settle-holds-the-batch @@ src/paxos/proposer.rs @@ s/self.batch.iter().any(|p| p.ask.settle \&\& !p.answered)/self.batch.iter().any(|p| p.ask.settle)/ @@ --lib a_batch_holding_an_answered_settle'
  # a caller that stops taking its watch holds a backlog bounded by bytes (WatchOptions::buffer_bytes at each stage)
  'watch-ready-by-count-only @@ src/watch.rs @@ s/let bytes = ready_bytes(\&item).min(self.options.buffer_bytes) as u32;/let bytes = 0;/ @@ --test watching a_caller_that_stops_taking_its_watch'
  'stream-by-count-only @@ src/client.rs @@ s/if queued >= STREAM_MIN_ANSWERS \&\& held + size > self.most {/if false {/ @@ --test watching a_caller_that_stops_taking_its_watch'
  'watch-ready-bytes-fixed @@ src/watch.rs @@ s/ready: std::sync::Arc::new(tokio::sync::Semaphore::new(buffer)),/ready: std::sync::Arc::new(tokio::sync::Semaphore::new(BUFFER_BYTES)),/ @@ --test watching a_caller_that_stops_taking_its_watch'
  'stream-bytes-fixed @@ src/client.rs @@ s/if queued >= STREAM_MIN_ANSWERS \&\& held + size > self.most {/if queued >= STREAM_MIN_ANSWERS \&\& held + size > 8 << 20 {/ @@ --test watching a_caller_that_stops_taking_its_watch'
  # the changes a watch holds for a lower version are bounded by bytes over its keys
  'watch-held-unbounded-unit @@ src/watch.rs @@ s/        self.shed(now, \&mut out);// @@ --lib held_changes_past_their_bytes'
  'watch-held-sheds-the-wrong-key-unit @@ src/watch.rs @@ s/b.0.cmp(\&a.0).then_with(|| a.1.cmp(\&b.1))/a.0.cmp(\&b.0).then_with(|| a.1.cmp(\&b.1))/ @@ --lib held_changes_past_their_bytes'
  'watch-held-sheds-one-change-unit @@ src/watch.rs @@ s/        if self.held_bytes <= self.max_held_bytes || one_change {/        if self.held_bytes <= self.max_held_bytes {/ @@ --lib held_changes_past_their_bytes'
  'watch-held-sheds-one-gap-per-key-unit @@ src/watch.rs @@ s/            while self.keys\[\&key\].waiting_since.is_some() {/            if self.keys[\&key].waiting_since.is_some() {/ @@ --lib held_changes_past_their_bytes'
  # a store's log is merged before it fills the map, a failed write merges and tries again, refused writes retry the merge
  'merge-log-bound-not-scaled-to-map-unit @@ src/storage/mod.rs @@ s/            merge_log_bytes: MERGE_LOG_BYTES.min(map_size_bytes \/ 8),/            merge_log_bytes: MERGE_LOG_BYTES,/ @@ --lib a_small_map_merges_its_log'
  'failed-write-not-merged-and-retried-unit @@ src/storage/mod.rs @@ s/            Err(e) if !self.overlay.is_empty() \&\& merge_may_run => {/            Err(e) if false => {/ @@ --lib a_failed_write_merges_the_log'
  'failed-write-merges-without-a-pause-unit @@ src/storage/mod.rs @@ s/            Err(e) if !self.overlay.is_empty() \&\& merge_may_run => {/            Err(e) if !self.overlay.is_empty() => {/ @@ --lib a_failed_write_merges_the_log'
  'refused-writes-never-retry-the-merge-unit @@ src/storage/mod.rs @@ s/                \&\& failed_at.elapsed() >= MERGE_RETRY_INTERVAL/                \&\& false/ @@ --lib writes_refused_while_merges_fail'
  'overlay-counts-a-rewritten-key-twice-unit @@ src/storage/mod.rs @@ s/            self.overlay_bytes -= key_len + old.len();/            self.overlay_bytes -= old.len();/ @@ --lib a_small_map_merges_its_log'
  # an actor that keeps crashing is restarted ever later; a peer's digest page must go forward
  'restart-backoff-none-unit @@ src/actors/supervisor.rs @@ s/        match crashes {/        match 1 {/ @@ --lib an_actor_that_keeps_crashing'
  'restart-for-ever-unit @@ src/actors/supervisor.rs @@ s/            _ => None,/            _ => Some(Duration::ZERO),/ @@ --lib an_actor_that_keeps_crashing'
  'digest-page-order-unchecked-unit @@ src/actors/anti_entropy.rs @@ s/^    increasing \&\& past_after$/    true/ @@ --lib a_digest_page_must_go_forward'
  # a peer's answer to a node's call is checked before anything acts on it; a stored key may be longer than max_key_bytes
  'peer-answers-unchecked @@ src/client.rs @@ s/            Ok(Frame::Answer(answer)) => match answer.validate() {/            Ok(Frame::Answer(answer)) => match Ok::<(), Error>(()) {/ @@ --test transport_bad_input a_peer_answer_that_fails_its_checks'
  'stored-key-checked-by-the-key-limit @@ src/messages.rs @@ s/    if key.is_empty() || key.len() > crate::config::LMDB_MAX_KEY_BYTES {/    if key.is_empty() || key.len() > 256 {/ @@ --test transport_bad_input a_peer_answer_that_fails_its_checks'
  'list-after-by-the-key-limit @@ src/actors/list.rs @@ s/    let stored = crate::config::LMDB_MAX_KEY_BYTES;/    let stored = limits.max_key_bytes;/ @@ --test listing a_list_refuses_the_reserved_prefix'
  'scan-after-by-the-key-limit @@ src/messages.rs @@ s/                    after.as_ref().map_or(Ok(()), |a| check_stored_key(a))/                    after.as_ref().map_or(Ok(()), |a| check_key_len(a, config))/ @@ --test listing a_list_refuses_the_reserved_prefix'
  'stream-ends-on-two-frames @@ src/client.rs @@ s/if queued >= STREAM_MIN_ANSWERS \&\& held + size > self.most {/if held > 0 \&\& held + size > self.most {/ @@ --lib a_stream_takes_a_few_answers'
  # what a node says is left of a lease is its home's wait, not this node's staggered one
  'lease-remaining-counts-stagger-unit @@ src/paxos/lease.rs @@ s/        Some(wait_before_expiry(s.ttl, 0).saturating_sub(now.duration_since(s.since)))/        Some(wait_before_expiry(s.ttl, s.place).saturating_sub(now.duration_since(s.since)))/ @@ --lib a_keepalive_restarts_the_clock'
  'http-watch-buffer-ignored @@ src/actors/http_api.rs @@ s/            buffer_bytes: self.config.limits.http_watch_buffer_bytes,// @@ --test http_api an_http_watch_whose_client_stops_reading'
  'http-get-without-etag @@ src/actors/http_api.rs @@ s/^        answer.headers_mut().insert(ETAG, etag(version));$/        let _ = etag(version);/ @@ --test http_api python_drives'
  'http-cas-ignores-if-match @@ src/actors/http_api.rs @@ s/^        return Ok(Some(version));$/        let _ = version; return Ok(None);/ @@ --test http_api python_drives'
  'https-accepts-any-client @@ src/actors/http_server.rs @@ s/Peer::accept(Some(tls.as_ref()), stream)/Peer::accept(None, stream)/ @@ --test http_api curl_over_https'
  'http-no-header-deadline @@ src/actors/http_server.rs @@ s/^                .header_read_timeout(header_timeout)$/                .header_read_timeout(None)/ @@ --test http_api the_api_bounds'
  'http-member-change-ignores-certificate @@ src/actors/http_api.rs @@ s/^            .map_err(Status::Forbidden)?;$/            .or_else(|_| Ok::<(), Status>(()))?;/ @@ --test http_api curl_over_https'
  # status and a scrape do not wait for a held-up storage actor (actors::storage, COUNT_WAIT)
  'count-waits-for-the-store @@ src/actors/storage.rs @@ s/^const COUNT_WAIT: Duration = Duration::from_secs(1);$/const COUNT_WAIT: Duration = Duration::from_secs(3600);/ @@ --lib the_count_of_records_is_given_up'
  # a lock's holder says its lease may be lost when its promise ends, not a TTL/3 later (src/cli/lock.rs)
  'lock-keeper-sleeps-past-its-promise @@ src/cli/lock.rs @@ s/tokio::time::sleep_until(next.min(until)).await;/tokio::time::sleep_until(next).await;/ @@ --bin paxkv a_cut_off_holder_says'
  # a listing older than a keepalive served here does not move the tracked lease back (paxos::lease)
  'lease-listing-moves-back @@ src/paxos/lease.rs @@ s/^        if version < entry.version {$/        if false \&\& version < entry.version {/ @@ --lib a_listing_older_than_a_served_keepalive'
  'linger-never-commits @@ src/actors/storage.rs @@ /std::thread::sleep(linger);/{n;d} @@ --lib commits_that_linger'
  'flush-waits-with-nothing-pending @@ src/actors/storage.rs @@ /^        if self.pending.is_empty() {$/,/^        }$/d @@ --lib a_flush_that_finds'
  'linger-on-an-idle-machine @@ src/actors/linger.rs @@ s/    busy \&\& records_written > 0/    records_written > 0/ @@ --lib linger'
  'frame-version-unchecked @@ src/frame.rs @@ s/    if version != PROTOCOL_VERSION {/    if false {/ @@ --test transport_bad_input another_protocol_version'
  'frame-version-not-sent @@ src/frame.rs @@ s/^    postcard::to_io(\&PROTOCOL_VERSION, \&mut buf)/    let _ = (\&PROTOCOL_VERSION, \&mut buf); Ok::<(), postcard::Error>(())/ @@ --test wire'
  'peer-link-backoff-reset-at-connect @@ src/actors/network.rs @@ s/^                log::info!("connected to node {} at {}", queue.node, queue.addr);/                backoff = RECONNECT_BACKOFF_MIN; log::info!("connected to node {} at {}", queue.node, queue.addr);/ @@ --test transport_bad_input a_peer_of_another_protocol_version'
  # a ballot at the end of the rounds (a forged or corrupt peer frame) must not wedge a key
  'round-bound-unchecked @@ src/messages.rs @@ s/match ballots.iter().find(|b| b.round > Ballot::MAX_ROUND) {/match ballots.iter().find(|_| false) {/ @@ --test transport_bad_input a_ballot_at_the_last_round'
  'round-bound-unchecked-unit @@ src/messages.rs @@ s/match ballots.iter().find(|b| b.round > Ballot::MAX_ROUND) {/match ballots.iter().find(|_| false) {/ @@ --lib rounds_versions_and_fences'
  'version-bound-unchecked @@ src/messages.rs @@ s/    if version.max(fence) > Register::MAX_VERSION {/    if false {/ @@ --lib rounds_versions_and_fences'
  # a listing voter's answer that no correct voter sends drops the voter
  'scan-answer-unchecked @@ src/paxos/listing.rs @@ s/            self.check_answer(\&records, more)?;/            let _ = self.check_answer(\&records, more);/ @@ --lib an_answer_no_correct_voter'
  'scan-answer-outside-the-prefix-taken @@ src/paxos/listing.rs @@ s/            if !r.key.starts_with(\&self.spec.prefix) {/            if false {/ @@ --lib an_answer_no_correct_voter'
  'scan-answer-empty-with-more-taken @@ src/paxos/listing.rs @@ s/        if more \&\& records.is_empty() {/        if false {/ @@ --lib an_answer_no_correct_voter'
  # a watch's memory: a version per key, for at most max_keys keys
  'watch-keys-unbounded @@ src/watch.rs @@ s/        if self.keys.contains_key(key) || self.keys.len() < self.max_keys {/        if true {/ @@ --test watching a_watch_ends_with_an_error'
  'watch-keys-unbounded-unit @@ src/watch.rs @@ s/        if self.keys.contains_key(key) || self.keys.len() < self.max_keys {/        if true {/ @@ --lib a_key_past_the_most_a_watch_follows'
  'http-watch-max-keys-ignored @@ src/actors/http_api.rs @@ s/            max_keys: self.config.limits.http_watch_max_keys,/            max_keys: crate::watch::MAX_WATCH_KEYS,/ @@ --test http_api the_api_bounds'
  'watch-gaps-expire-in-map-order @@ src/watch.rs @@ s/        due.sort_unstable();// @@ --lib gaps_of_many_keys_expire'
  'watch-waiting-set-not-kept @@ src/watch.rs @@ /    fn track(\&mut self, key: \&Key) {/a\        return;\n        #[allow(unreachable_code)] @@ --lib gaps_of_many_keys_expire'
  'cli-watch-max-keys-ignored @@ src/cli/watch.rs @@ s/        max_keys: args.max_keys.get(),/        max_keys: paxkv::watch::MAX_WATCH_KEYS,/ @@ --test cli cli_round_trips'
  'lease-keys-reserved-a-small-answer @@ src/actors/network.rs @@ s/            | crate::messages::RequestBody::LeaseKeys { .. } => config.frame_limit(),/            | crate::messages::RequestBody::Ping => config.frame_limit(),/ @@ --test transport_lease_keys_budget lease_keys_never_read'
  # one source address holds at most its share of the HTTP API's connections
  'http-connections-per-source-ignored @@ src/actors/http_api.rs @@ s/            max_per_source: limits.http_max_connections_per_source,/            max_per_source: limits.http_max_connections,/ @@ --test http_api one_address_holds_at_most'
  'source-slot-never-given-back @@ src/actors/sources.rs @@ s/            \*count -= 1;/            *count -= 0;/ @@ --lib an_address_holds_at_most'
  'pinned-client-retries-a-node-that-cannot-serve @@ src/client.rs @@ s/if self.inner.options.pinned \&\& matches!(e, Error::NotThisNode(_)) =>/if false \&\& matches!(e, Error::NotThisNode(_)) =>/ @@ --test membership_who_may_vote a_removed_node_that_returns'
)

# name, file, expression and cargo test arguments of one entry, into the globals below.
split() {
  name=${1%% @@ *}; rest=${1#* @@ }
  file=${rest%% @@ *}; rest=${rest#* @@ }
  expr=${rest%% @@ *}; args=${rest#* @@ }
}

# --check: every entry must still mean what it says. A mutation that no longer applies (the
# code it undid was rewritten) reports nothing but "did not apply" at run time and is easily
# read past; this mode fails on it, in seconds, against the working tree. It also checks the
# test each entry names: the target (`--lib`, `--bin NAME` or `--test NAME`) must exist and, with --tests,
# its filter must match one of that target's tests.
if [ "${1:-}" = --check ]; then
  tests=0; [ "${2:-}" = --tests ] && tests=1
  scratch=$(mktemp -d); trap 'rm -rf "$scratch"' EXIT
  declare -A listed=()
  bad=0; count=0
  for m in "${mutants[@]}"; do
    split "$m"; count=$((count + 1))
    read -r -a words <<<"$args"
    case "${words[0]}" in
      --lib) target=(--lib); filter=${words[1]:-} ;;
      --test) target=(--test "${words[1]}"); filter=${words[2]:-} ;;
      --bin) target=(--bin "${words[1]}"); filter=${words[2]:-} ;;
      *) echo "$name: unknown test target ($args)"; bad=1; continue ;;
    esac
    if [ ! -f "$repo/$file" ]; then echo "$name: no file $file"; bad=1; continue; fi
    if [ "${target[0]}" = --test ] && [ ! -f "$repo/tests/${target[1]}.rs" ]; then
      echo "$name: no test target tests/${target[1]}.rs"; bad=1; continue
    fi
    cp "$repo/$file" "$scratch/file"
    sed -i "$expr" "$scratch/file" 2>"$scratch/err" || { echo "$name: sed failed: $(cat "$scratch/err")"; bad=1; continue; }
    if cmp -s "$repo/$file" "$scratch/file"; then
      echo "$name: the mutation does not apply to $file"; bad=1; continue
    fi
    [ "$tests" = 1 ] || continue
    # The tests' names, listed once per target (built first if they are not).
    key="${target[*]}"
    if [ -z "${listed[$key]+x}" ]; then
      listed[$key]=$scratch/list.$count
      (cd "$repo" && cargo test -q "${target[@]}" -- --list --format terse 2>/dev/null) >"${listed[$key]}" || {
        echo "$name: cannot list the tests of ${target[*]}"; bad=1; continue; }
    fi
    if [ -n "$filter" ] && ! grep -qF -- "$filter" "${listed[$key]}"; then
      echo "$name: the filter $filter matches no test of ${target[*]}"; bad=1
    fi
  done
  [ "$bad" = 0 ] && echo "mutants: all $count expressions apply and name existing tests"
  exit "$bad"
fi

export CARGO_TARGET_DIR=$mutants_target
rm -rf "$work"; git -C "$repo" worktree prune
git -C "$repo" worktree add --detach "$work" HEAD >/dev/null 2>&1 || { echo "no worktree"; exit 1; }
trap 'git -C "$repo" worktree remove --force "$work" >/dev/null 2>&1' EXIT
for m in "${mutants[@]}"; do
  split "$m"
  if [ $# -gt 0 ] && ! printf '%s\n' "$@" | grep -qx "$name"; then continue; fi
  git -C "$work" checkout -q -- .
  before=$(md5sum "$work/$file")
  sed -i "$expr" "$work/$file"
  if [ "$before" = "$(md5sum "$work/$file")" ]; then echo "$name: the mutation did not apply"; continue; fi
  # shellcheck disable=SC2086
  if (cd "$work" && cargo test ${RELEASE:+--release} $args >"$work/../mutant-$name.log" 2>&1); then
    if ! grep -q "^test .* ok$" "$work/../mutant-$name.log"; then
      echo "$name: the test filter matched no test ($args)"
    else
      echo "$name: MISSED ($args passed)"
    fi
  else
    if grep -q "error\[E" "$work/../mutant-$name.log"; then
      echo "$name: does not build (see mutant-$name.log)"
    else
      echo "$name: caught by $args"
    fi
  fi
done
