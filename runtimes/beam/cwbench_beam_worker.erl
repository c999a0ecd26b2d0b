%% The cwbench BEAM runtime: one worker process of the pool.
%%
%% Pulls one job at a time from the dispatcher (so its mailbox never holds
%% more than one job), runs the CPU step (a counted loop the compiler cannot
%% remove), crashes with erlang:error/1 when the job says so, sleeps with
%% `receive after` for the simulated I/O, and reports the job's timestamps
%% (microseconds on erlang:monotonic_time, relative to the run's time zero).
-module(cwbench_beam_worker).
-export([start_link/2, init/2, spin/2, sink/1]).
%% One job's execution, shared with the WebSocket server's task processes.
-export([run/7]).

start_link(Idx, Dispatcher) ->
    {ok, spawn_link(?MODULE, init, [Idx, Dispatcher])}.

init(Idx, Dispatcher) ->
    %% A (re)started worker first asks how long to back off.
    Dispatcher ! {hello, Idx, self()},
    receive
        {go, DelayMs} when DelayMs > 0 -> receive after DelayMs -> ok end;
        {go, _} -> ok
    end,
    Dispatcher ! {ready, Idx, self()},
    loop(Idx, Dispatcher).

loop(Idx, Dispatcher) ->
    receive
        {job, {Id, Class, Work, SleepUs, Crash}, Origin, Release} ->
            Msg = run(Id, Class, Work, SleepUs, Crash, Origin, Release),
            Dispatcher ! {Msg, Idx, self()},
            case Msg of
                {crashed, _} -> erlang:error({injected_crash, Id});
                _ -> loop(Idx, Dispatcher)
            end
    end.

now_us() ->
    erlang:monotonic_time(microsecond) - persistent_term:get(cwbench_t0).

run(Id, Class, Work, SleepUs, Crash, Origin, Release) ->
    Pickup = now_us(),
    Deadline = case persistent_term:get(cwbench_timeout_us) of
                   0 -> infinity;
                   T -> Pickup + T
               end,
    _ = ?MODULE:sink(spin(Work, Id bxor Work)),
    AfterCpu = now_us(),
    Rec = fun(Outcome, End, Req, Act) ->
                  {Id, Class, Outcome, Origin, Release, Pickup, End, Req, Act}
          end,
    if
        Deadline =/= infinity andalso AfterCpu >= Deadline ->
            {timed_out, Rec(2, AfterCpu, 0, 0)};
        Crash ->
            {crashed, Rec(1, AfterCpu, 0, 0)};
        SleepUs =:= 0 ->
            {done, Rec(0, AfterCpu, 0, 0)};
        true ->
            Left = case Deadline of
                       infinity -> SleepUs;
                       _ -> Deadline - AfterCpu
                   end,
            %% Erlang timers count whole milliseconds: round up, and measure
            %% the actual sleep (the overshoot is reported, not hidden).
            Ms = (min(SleepUs, Left) + 999) div 1000,
            receive after Ms -> ok end,
            End = now_us(),
            case SleepUs > Left of
                true -> {timed_out, Rec(2, End, 0, 0)};
                false -> {done, Rec(0, End, SleepUs, End - AfterCpu)}
            end
    end.

%% The CPU step: Work iterations of a tail-recursive loop over a counter;
%% the result goes to sink/1, a remote call the compiler cannot remove.
spin(0, Acc) -> Acc;
spin(N, Acc) -> spin(N - 1, Acc bxor N).

sink(X) -> X.
