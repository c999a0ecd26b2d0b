%% The cwbench BEAM runtime: the OTP supervisor of the worker pool.
%%
%% one_for_one, one permanent child per worker index. The restart policy of
%% the scenario (max_restarts within restart_window_ms, backoff_ms doubling up
%% to max_backoff_ms) is applied by the dispatcher (cwbench_beam), because
%% OTP's own intensity period is whole seconds and OTP has no backoff; this
%% supervisor is therefore given an intensity it never reaches, and does the
%% restarting itself: it traps the worker's exit and starts the replacement.
-module(cwbench_beam_sup).
-behaviour(supervisor).
-export([start_link/2, init/1]).

start_link(Workers, Dispatcher) ->
    supervisor:start_link(?MODULE, {Workers, Dispatcher}).

init({Workers, Dispatcher}) ->
    Flags = #{strategy => one_for_one, intensity => 1000000000, period => 1},
    Children = [#{id => {worker, I},
                  start => {cwbench_beam_worker, start_link, [I, Dispatcher]},
                  restart => permanent,
                  shutdown => brutal_kill,
                  type => worker}
                || I <- lists:seq(0, Workers - 1)],
    {ok, {Flags, Children}}.
