%% The cwbench BEAM runtime: the line protocol and the dispatcher.
%%
%% Started by the cwbench agent as `erl -noshell -noinput -run cwbench_beam
%% main`; reads the plan and the jobs on stdin and writes per-job records on
%% stdout, one line each (the protocol is in docs/workload.md, "Other
%% runtimes"). This process is the dispatcher: it holds the jobs the agent
%% sent (at most `window`, by credit), releases them into a bounded queue of
%% `bound` jobs (closed loop: as fast as there is room; open loop: at their
%% intended times), hands each queued job to whichever worker is free (the
%% workers pull, one job at a time, under cwbench_beam_sup), applies the
%% restart policy, and is the only writer of stdout.
-module(cwbench_beam).
-export([main/0, digest_hex/1]).
%% Shared with the WebSocket server mode (cwbench_beam_ws).
-export([probe/4, wall_time/0, busy_us/2, job_digest/1]).

-define(M64, 16#FFFFFFFFFFFFFFFF).
-define(DSEED, 16#cbf29ce484222325).
-define(DMUL, 16#9e3779b97f4a7c15).
-define(FLUSH_LINES, 256).

-record(s, {
    port,
    cfg = #{},
    t0,                       % erlang:monotonic_time(microsecond) at READY
    sup,
    pending = queue:new(),    % received from the agent, not yet released
    queue = queue:new(),      % released, waiting for a worker (<= bound)
    qlen = 0,
    idle = queue:new(),       % workers waiting for a job, longest-waiting
                              % first (as tokio's fair semaphore): {Idx, Pid}
    busy = #{},               % Pid => Idx
    ended = false,
    open_t0,                  % open loop: time zero of the intended times
    attempt,                  % closed loop: enqueue attempt of the head job
    digest = ?DSEED,
    count = 0,
    cancelled = 0,
    credit = 0,               % released since the last K line
    out = [],
    nout = 0,
    recent = [],              % crash times (µs) within the restart window
    backoff = #{},            % Idx => {DelayMs, LastCrashUs}
    delay = #{},              % Idx => DelayMs for its replacement
    crashed_at = #{},         % Idx => crash time (µs), until the next pick-up
    probe_last,               % µs of the last probe wake
    wall0 = [],               % scheduler_wall_time at READY
    failed = false,           % the pool failed: count further jobs as
                              % cancelled until the agent's C or E
    %% A timed closed loop (end_us or end_jobs in the header): which jobs
    %% are measured and when releasing stops, decided at release as the
    %% agent's own producers do (agent/src/span.rs).
    began = false,            % the first release happened
    measure_from,             % µs: the measured part starts (warmup_us), or
                              % the first measured release (end_us)
    measured = 0,             % measured jobs released
    stopped = false           % the measured part is over: release no more
}).

main() ->
    %% Expected crashes (injected) must not flood stderr.
    logger:set_primary_config(level, critical),
    %% The VM must never outlive this process: exits of the port (the agent
    %% closed the pipes), the supervisor or the probe arrive as messages.
    process_flag(trap_exit, true),
    Port = open_port({fd, 0, 1}, [binary, {line, 4096}, eof]),
    try
        S = header(#s{port = Port}),
        loop(S)
    catch
        C:E:St ->
            catch port_command(Port, io_lib:format("ERR ~0p:~0p ~0p~n", [C, E, St])),
            erlang:halt(3)
    end.

%% --- start-up -------------------------------------------------------------

%% The header may be longer than the port's 4,096-byte lines (a long
%% kill list): its parts arrive as noeol chunks, up to 1 MiB in all.
header(S) ->
    header(S, <<>>).

header(S = #s{port = Port}, Acc) ->
    receive
        {Port, {data, {noeol, Part}}} when byte_size(Acc) + byte_size(Part) =< 1048576 ->
            header(S, <<Acc/binary, Part/binary>>);
        {Port, {data, {noeol, _}}} ->
            error(header_too_long);
        {Port, {data, {eol, Part}}} ->
            case <<Acc/binary, Part/binary>> of
                <<"cwbench-beam 2 ", Rest/binary>> ->
                    start(S#s{cfg = plan(Rest)});
                <<"cwbench-beam-ws 1 ", Rest/binary>> ->
                    %% Server mode: this process serves WebSocket tasks
                    %% until the agent's E or C, then halts.
                    cwbench_beam_ws:serve(Port, plan(Rest));
                Other ->
                    error({bad_header, binary:part(Other, 0, min(byte_size(Other), 200))})
            end;
        {Port, eof} ->
            erlang:halt(0)
    end.

plan(Rest) ->
    maps:from_list([kv(P) || P <- binary:split(Rest, <<" ">>, [global, trim_all])]).

kv(P) ->
    [K, V] = binary:split(P, <<"=">>),
    case K of
        <<"kill">> -> {kill, maps:from_list([{binary_to_integer(I), true}
                                             || I <- binary:split(V, <<",">>, [global, trim_all])])};
        _ -> {binary_to_atom(K), binary_to_integer(V)}
    end.

cfg(K, #s{cfg = C}) -> maps:get(K, C, 0).

start(S0) ->
    %% The dispatcher stands for tokio's queue, a shared structure no worker
    %% waits on a scheduler for: it runs at high priority, so 64 busy
    %% workers do not queue it behind their time slices (its work per
    %% message is small; it never spins).
    process_flag(priority, high),
    erlang:system_flag(scheduler_wall_time, true),
    T0 = erlang:monotonic_time(microsecond),
    persistent_term:put(cwbench_t0, T0),
    persistent_term:put(cwbench_timeout_us, cfg(timeout_ms, S0) * 1000),
    S1 = S0#s{t0 = T0, probe_last = 0, wall0 = wall_time()},
    {ok, Sup} = cwbench_beam_sup:start_link(cfg(workers, S1), self()),
    Self = self(),
    Period = max(cfg(probe_us, S1), 100),
    spawn_link(fun() -> probe(Self, T0, Period, Period) end),
    erlang:send_after(max(cfg(gauge_ms, S1), 10), self(), gauge),
    port_command(S1#s.port,
                 io_lib:format("READY otp=~s schedulers=~b~n",
                               [erlang:system_info(otp_release),
                                erlang:system_info(schedulers_online)])),
    S1#s{sup = Sup}.

%% --- the dispatcher loop ---------------------------------------------------

loop(S0) ->
    S = pump(S0),
    case finished(S) of
        true -> finish(S, 0);
        false ->
            receive
                Msg -> loop(handle(Msg, S))
            after 0 ->
                case S#s.nout > 0 orelse S#s.credit > 0 of
                    true -> loop(flush(S));
                    false ->
                        %% Nothing to write: wait for the next message or
                        %% the next open-loop release.
                        receive Msg -> loop(handle(Msg, S))
                        after wait_ms(S) -> loop(S)
                        end
                end
            end
    end.

%% Flush as soon as the mailbox is empty, then wait for a message or the next
%% open-loop release, on the VM's millisecond timer (no spinning: at high
%% priority that would starve the workers), so a release may be up to about
%% a millisecond late; latency counts from the intended time regardless.
wait_ms(S = #s{pending = P}) ->
    case cfg(open, S) =:= 1 andalso S#s.qlen < cfg(bound, S) andalso queue:peek(P) of
        {value, Job} ->
            max(0, (due(Job, S) - now_us(S) + 999) div 1000);
        _ -> infinity
    end.

due({_, _, _, _, _, Intended}, #s{open_t0 = T}) -> T + Intended.

finished(#s{ended = E, pending = P, qlen = Q, busy = B, stopped = Stopped}) ->
    %% A stopped timed run never releases what is still pending.
    E andalso Q =:= 0 andalso map_size(B) =:= 0 andalso (Stopped orelse queue:is_empty(P)).

handle({Port, {data, {eol, Line}}}, S = #s{port = Port}) ->
    line(Line, S);
handle({Port, eof}, S = #s{port = Port, ended = true}) ->
    S;
handle({Port, eof}, #s{port = Port}) ->
    %% The agent is gone before the end of the jobs: stop at once.
    erlang:halt(0);
handle({Port, {data, {eol, Line}}}, S = #s{port = Port, failed = true}) ->
    line(Line, S);
%% A killed worker's last words: its job was counted cancelled when the
%% pool failed.
handle({hello, _, _}, S = #s{failed = true}) ->
    S;
handle({ready, _, _}, S = #s{failed = true}) ->
    S;
handle({{_, _}, _, _}, S = #s{failed = true}) ->
    S;
handle({hello, Idx, Pid}, S = #s{delay = D}) ->
    Pid ! {go, maps:get(Idx, D, 0)},
    S#s{delay = maps:remove(Idx, D)};
handle({ready, Idx, Pid}, S) ->
    S#s{idle = queue:in({Idx, Pid}, S#s.idle)};
handle({{done, Rec}, Idx, Pid}, S) ->
    S1 = record(Rec, Idx, S),
    S1#s{busy = maps:remove(Pid, S1#s.busy), idle = queue:in({Idx, Pid}, S1#s.idle)};
handle({{timed_out, Rec}, Idx, Pid}, S) ->
    S1 = record(Rec, Idx, S),
    S1#s{busy = maps:remove(Pid, S1#s.busy), idle = queue:in({Idx, Pid}, S1#s.idle)};
handle({{crashed, Rec}, Idx, Pid}, S) ->
    S1 = record(Rec, Idx, S),
    crashed(Idx, element(7, Rec), S1#s{busy = maps:remove(Pid, S1#s.busy)});
handle({late, Us, At}, S) ->
    out(["L ", integer_to_binary(Us), $\n], S#s{probe_last = At});
handle(gauge, S) ->
    erlang:send_after(max(cfg(gauge_ms, S), 10), self(), gauge),
    out(gauge_line(S), S);
handle({'EXIT', Port, _}, #s{port = Port}) ->
    %% stdout or stdin is gone with the agent.
    erlang:halt(0);
handle({'EXIT', Pid, Reason}, _S) ->
    error({linked_process_died, Pid, Reason});
handle(_, S) ->
    S.

line(<<"J ", Rest/binary>>, S) ->
    [Id, Class, Work, Sleep, Crash, Intended] =
        [binary_to_integer(F) || F <- binary:split(Rest, <<" ">>, [global])],
    Job = {Id, Class, Work, Sleep, Crash =:= 1, Intended},
    D = lists:foldl(fun(W, St) -> word(St, W) end, S#s.digest,
                    [Id, Work bor (Sleep bsl 32), Class bor (Crash bsl 32), Intended]),
    line_job(Job, S#s{digest = D, count = S#s.count + 1});
line(<<"E">>, S = #s{failed = true}) ->
    finish(S, 0);
line(<<"E">>, S) ->
    S#s{ended = true};
line(<<"C">>, S) ->
    cancel(S);
line(Other, _S) ->
    error({bad_line, Other}).

%% A job written after the pool failed still counts in the digest, and as
%% cancelled: every job the agent wrote comes back exactly once.
line_job(_Job, S = #s{failed = true}) ->
    S#s{cancelled = S#s.cancelled + 1};
line_job(Job, S) ->
    Now = now_us(S),
    S#s{pending = queue:in(Job, S#s.pending),
        open_t0 = case S#s.open_t0 of undefined -> Now; T -> T end,
        attempt = case S#s.attempt of undefined -> Now; A -> A end}.

%% Moves jobs pending -> queue -> idle workers until nothing moves.
pump(S0) ->
    S1 = release(S0),
    S2 = assign(S1),
    case S2#s.qlen < cfg(bound, S2) andalso not queue:is_empty(S2#s.pending)
        andalso S2#s.qlen =/= S1#s.qlen of
        true -> pump(S2);
        false -> S2
    end.

release(S = #s{qlen = Q}) ->
    case Q < cfg(bound, S) andalso queue:peek(S#s.pending) of
        {value, Job} ->
            Now = now_us(S),
            Open = cfg(open, S) =:= 1,
            case Open andalso due(Job, S) > Now of
                true -> S;
                false ->
                    Origin = case Open of
                                 true -> due(Job, S);
                                 false -> S#s.attempt
                             end,
                    {Id, Class, Work, Sleep, Crash, _} = Job,
                    case admit(Id, Origin, S) of
                        {false, S0} -> S0;
                        {true, S0} -> release_job({Id, Class, Work, Sleep, Crash}, Origin, Now, S0)
                    end
            end;
        _ -> S
    end.

release_job(Job, Origin, Now, S = #s{qlen = Q}) ->
                    P = queue:drop(S#s.pending),
                    release(S#s{pending = P,
                                queue = queue:in({Job, Origin, Now}, S#s.queue),
                                qlen = Q + 1,
                                credit = S#s.credit + 1,
                                attempt = case queue:is_empty(P) of
                                              true -> undefined;
                                              false -> Now
                                          end}).

%% May job `Id`, whose latency origin is `Origin`, be released? Only a timed
%% run ever says no: once its measured part is over, for good.
admit(Id, Origin, S0) ->
    S = case S0#s.began of
            true -> S0;
            false ->
                S1 = S0#s{began = true},
                case cfg(warmup_us, S1) of
                    0 -> S1;
                    W -> measure_from(Origin + W, S1)
                end
        end,
    EndUs = cfg(end_us, S),
    EndJobs = cfg(end_jobs, S),
    if
        EndUs =:= 0, EndJobs =:= 0 -> {true, S};
        S#s.stopped -> {false, S};
        true ->
            case measured(Id, Origin, S) of
                false -> {true, S};
                true when EndUs > 0 ->
                    S2 = case S#s.measure_from of
                             undefined -> measure_from(Origin, S);
                             _ -> S
                         end,
                    case Origin >= S2#s.measure_from + EndUs of
                        true -> {false, stop(S2)};
                        false -> {true, S2}
                    end;
                true ->
                    N = S#s.measured,
                    case N >= EndJobs of
                        true -> {false, stop(S)};
                        false -> {true, S#s{measured = N + 1}}
                    end
            end
    end.

measured(Id, Origin, S) ->
    case cfg(warmup_us, S) of
        0 -> Id >= cfg(warmup_jobs, S);
        _ -> Origin >= S#s.measure_from
    end.

%% The agent's recorder needs the same instant to tell measured jobs.
measure_from(T, S) ->
    out(["M ", integer_to_binary(T), $\n], S#s{measure_from = T}).

%% The measured part is over: the credit so far, then X, at once, so the
%% agent can tell the coordinator to stop feeding.
stop(S) ->
    flush(out(<<"X\n">>, flush(S#s{stopped = true}))).

assign(S = #s{qlen = Q}) when Q > 0 ->
    case queue:out(S#s.idle) of
        {{value, {Idx, Pid}}, Idle} -> assign(Idx, Pid, Idle, S);
        {empty, _} -> S
    end;
assign(S) ->
    S.

assign(Idx, Pid, Idle, S = #s{qlen = Q}) ->
    {{value, {Job, Origin, Release}}, Rest} = queue:out(S#s.queue),
    S1 = S#s{idle = Idle, queue = Rest, qlen = Q - 1},
    Id = element(1, Job),
    case maps:is_key(Id, cfg(kill, S1)) of
        true ->
            %% kill-worker fault: the worker is killed from outside while it
            %% holds the job, which counts as crashed.
            Now = now_us(S1),
            S2 = record({Id, element(2, Job), 1, Origin, Release, Now, Now, 0, 0}, Idx, S1),
            exit(Pid, kill),
            assign(crashed(Idx, Now, S2));
        false ->
            Pid ! {job, Job, Origin, Release},
            assign(S1#s{busy = (S1#s.busy)#{Pid => Idx}})
    end.

%% A worker crashed at `At` (µs): the restart intensity, then the backoff of
%% its replacement.
crashed(Idx, At, S) ->
    Max = cfg(max_restarts, S),
    Window = cfg(restart_window_ms, S) * 1000,
    Recent = [T || T <- [At | S#s.recent], At - T =< Window],
    case Max > 0 andalso length(Recent) > Max of
        true ->
            Msg = io_lib:format("supervisor gave up: ~b crashes within ~b ms (max_restarts = ~b)",
                                [length(Recent), Window div 1000, Max]),
            %% The workers stop and what is held is cancelled; jobs already
            %% on their way are read and counted until the agent, told by
            %% F, answers C (or E), so END covers every job written.
            S1 = out(["F ", Msg, $\n], S),
            flush((cancel_all(S1))#s{failed = true});
        false ->
            {Delay, Backoff} =
                case cfg(backoff_ms, S) of
                    0 -> {0, S#s.backoff};
                    B ->
                        D = case maps:get(Idx, S#s.backoff, none) of
                                {Prev, Last} when At - Last < 1000000 ->
                                    min(Prev * 2, max(cfg(max_backoff_ms, S), B));
                                _ -> B
                            end,
                        {D, (S#s.backoff)#{Idx => {D, At}}}
                end,
            out(["S ", integer_to_binary(Idx), $\n],
                S#s{recent = lists:sublist(Recent, Max + 1),
                    backoff = Backoff,
                    delay = (S#s.delay)#{Idx => Delay},
                    crashed_at = (S#s.crashed_at)#{Idx => At}})
    end.

%% One finished job: its record line, and the restart latency of a replaced
%% worker's first pick-up.
record({Id, Class, Outcome, Origin, Release, Pickup, End, Req, Act}, Idx, S) ->
    S1 = case maps:take(Idx, S#s.crashed_at) of
             {At, Rest} ->
                 out(["R ", integer_to_binary(max(Pickup - At, 0)), $\n],
                     S#s{crashed_at = Rest});
             error -> S
         end,
    out(["D ", lists:join($\s, [integer_to_binary(X) || X <- [Id, Class, Outcome, Origin,
                                                            Release, Pickup, End, Req, Act]]),
         $\n], S1).

%% --- cancel and the end ------------------------------------------------------

cancel(S) ->
    finish(cancel_all(S), 0).

%% Everything received and not finished counts as cancelled; the workers stop.
cancel_all(S) ->
    unlink(S#s.sup),
    exit(S#s.sup, kill),
    N = queue:len(S#s.pending) + S#s.qlen + map_size(S#s.busy),
    S#s{cancelled = S#s.cancelled + N, pending = queue:new(), queue = queue:new(),
        qlen = 0, busy = #{}, idle = queue:new()}.

finish(S0, Code) ->
    %% A probe starved until the end records its pending lateness.
    Now = now_us(S0),
    Period = max(cfg(probe_us, S0), 100),
    S1 = case Now - S0#s.probe_last > 2 * Period of
             true -> out(["L ", integer_to_binary(Now - S0#s.probe_last - Period), $\n], S0);
             false -> S0
         end,
    S2 = out(gauge_line(S1), S1),
    Unreleased = case S2#s.stopped of
                     true -> queue:len(S2#s.pending);
                     false -> 0
                 end,
    S3 = out(io_lib:format("END ~s ~b ~b ~b~n",
                           [digest_hex(S2), S2#s.count, S2#s.cancelled, Unreleased]), S2),
    _ = flush(S3),
    erlang:halt(Code).

%% --- output ----------------------------------------------------------------

out(Line, S = #s{out = O, nout = N}) ->
    S1 = S#s{out = [O, Line], nout = N + 1},
    case N + 1 >= ?FLUSH_LINES of
        true -> flush(S1);
        false -> S1
    end.

flush(S = #s{credit = C}) ->
    Out = case C of
              0 -> S#s.out;
              _ -> [S#s.out, "K ", integer_to_binary(C), $\n]
          end,
    port_command(S#s.port, Out),
    S#s{out = [], nout = 0, credit = 0}.

gauge_line(S) ->
    ["G ", lists:join($\s, [integer_to_binary(X)
                           || X <- [S#s.qlen, map_size(S#s.busy),
                                    erlang:system_info(process_count),
                                    erlang:statistics(total_run_queue_lengths),
                                    busy_us(S)]]), $\n].

%% The normal schedulers' {Id, Active, Total} wall times.
wall_time() ->
    N = erlang:system_info(schedulers),
    lists:sort([W || W = {Id, _, _} <- erlang:statistics(scheduler_wall_time), Id =< N]).

%% Busy time of the normal schedulers since READY, µs: each scheduler's
%% active share of its wall time times the elapsed time. (The unit of
%% scheduler_wall_time is unspecified, so only its ratios are used.)
busy_us(S = #s{wall0 = W0}) ->
    busy_us(W0, now_us(S)).

busy_us(W0, Elapsed) ->
    Busy = lists:sum([case T1 - T0 of
                          0 -> 0;
                          DT -> (A1 - A0) / DT
                      end || {{Id, A0, T0}, {Id, A1, T1}} <- lists:zip(W0, wall_time())]),
    round(Busy * Elapsed).

now_us(#s{t0 = T0}) -> erlang:monotonic_time(microsecond) - T0.

%% --- the scheduler-lateness probe ------------------------------------------

%% Sleeps one period at a time and reports how late each wake is. Erlang
%% timers count milliseconds, so the period is rounded up to whole ms.
probe(Disp, T0, Period, Next) ->
    Now0 = erlang:monotonic_time(microsecond) - T0,
    Ms = max(0, (Next - Now0 + 999) div 1000),
    receive after Ms -> ok end,
    Now = erlang:monotonic_time(microsecond) - T0,
    Disp ! {late, max(Now - Next, 0), Now},
    Next1 = case Next + Period < Now of
                true -> Now + Period;
                false -> Next + Period
            end,
    probe(Disp, T0, Period, Next1).

%% --- the job-stream digest (docs/workload.md) --------------------------------

digest_value(State, Count) ->
    Z0 = State bxor ((Count * ?DMUL) band ?M64),
    Z1 = ((Z0 bxor (Z0 bsr 30)) * 16#bf58476d1ce4e5b9) band ?M64,
    Z2 = ((Z1 bxor (Z1 bsr 27)) * 16#94d049bb133111eb) band ?M64,
    Z2 bxor (Z2 bsr 31).

%% One task's digest (the sequence holding it alone): the WebSocket
%% server's task-set digest is the wrapping sum of these.
job_digest({Id, Class, Work, Sleep, Crash, Intended}) ->
    D = lists:foldl(fun(W, A) -> word(A, W) end, ?DSEED,
                    [Id, Work bor (Sleep bsl 32), Class bor (Crash bsl 32), Intended]),
    digest_value(D, 1).

word(State, W) ->
    R = ((State bsl 5) bor (State bsr 59)) band ?M64,
    ((R bxor W) * ?DMUL) band ?M64.

digest_hex(#s{digest = State, count = Count}) ->
    io_lib:format("~16.16.0b", [digest_value(State, Count)]);
digest_hex(Jobs) when is_list(Jobs) ->
    %% For tests: [{Id, Class, Work, Sleep, Crash(0|1), Intended}].
    S = lists:foldl(fun({Id, Class, Work, Sleep, Crash, Intended}, St) ->
                            D = lists:foldl(fun(W, A) -> word(A, W) end, St#s.digest,
                                            [Id, Work bor (Sleep bsl 32),
                                             Class bor (Crash bsl 32), Intended]),
                            St#s{digest = D, count = St#s.count + 1}
                    end, #s{}, Jobs),
    lists:flatten(digest_hex(S)).
