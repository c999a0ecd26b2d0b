%% The cwbench BEAM runtime in server mode: a WebSocket task server.
%%
%% Entered from cwbench_beam when the header is `cwbench-beam-ws 1 ...`
%% (docs/workload.md, "Other runtimes"). Speaks the task protocol of
%% docs/websocket.md over plain gen_tcp: one acceptor, a process per
%% connection, a process per task. This process (the one that owns stdin
%% and stdout) is the only writer of stdout: it reports every task read
%% (T lines), the connection gauges (W), the scheduler gauges (G), the
%% lateness probe (L), and at the end its task-set digest (END).
-module(cwbench_beam_ws).
-export([serve/2]).
%% Spawned.
-export([acceptor/3, conn/2]).
%% The protocol's pure parts, callable from a shell.
-export([parse_frame/3, decode_task/1, json_task/1, frame/2]).

-define(GUID, <<"258EAFA5-E914-47DA-95CA-C5AB0DC85B11">>).
%% A client that has not finished its opening handshake by then is dropped.
-define(HANDSHAKE_MS, 5000).
%% Answers that cannot be written for this long: the client is not reading.
-define(WRITE_MS, 2000).
%% The close handshake, ours or the client's.
-define(CLOSE_MS, 1000).
%% After end of jobs: tasks in flight are answered within this, or cancelled.
-define(DRAIN_MS, 10000).
%% After a cancel: connections report their cancelled tasks within this.
-define(CANCEL_MS, 500).
-define(MAX_REQUEST, 8192).
-define(FLUSH_LINES, 256).

%% --- the server process ------------------------------------------------------

-record(srv, {
    port,                 % stdin/stdout
    cfg,
    t0,
    lsock,
    conns = #{},          % Pid => accepted | up | down
    open = 0,             % connections past their handshake, not yet closed
    dropped = 0,          % connections closed for what their client did
    tasks = 0,            % T lines written
    sum = 0,              % their task-set digest (wrapping sum)
    cancelled = 0,
    ending = none,        % none | drain | cancel
    out = [],
    nout = 0,
    wall0,
    probe_last = 0
}).

cfg(K, #srv{cfg = C}) -> maps:get(K, C, 0).

serve(Port, Cfg) ->
    erlang:system_flag(scheduler_wall_time, true),
    T0 = erlang:monotonic_time(microsecond),
    persistent_term:put(cwbench_t0, T0),
    persistent_term:put(cwbench_timeout_us, maps:get(timeout_ms, Cfg, 0) * 1000),
    %% Tasks in flight, server-wide: the connections count, the gauge reads.
    persistent_term:put(cwbench_ws_in_flight, counters:new(1, [write_concurrency])),
    S = #srv{port = Port, cfg = Cfg, t0 = T0, wall0 = cwbench_beam:wall_time()},
    Opts = [binary, {packet, raw}, {active, false}, {reuseaddr, true},
            {backlog, 4096}, {nodelay, true}, {sndbuf, 65536},
            {send_timeout, ?WRITE_MS}, {ip, {0, 0, 0, 0}}],
    L = case gen_tcp:listen(cfg(port, S), Opts) of
            {ok, Sock} -> Sock;
            {error, E} ->
                port_command(Port, io_lib:format("ERR cannot listen on 0.0.0.0:~b (websocket.port): ~p~n",
                                                 [cfg(port, S), E])),
                erlang:halt(3)
        end,
    {ok, Bound} = inet:port(L),
    Self = self(),
    spawn_link(?MODULE, acceptor, [Self, L, Cfg]),
    Period = max(cfg(probe_us, S), 100),
    spawn_link(cwbench_beam, probe, [Self, T0, Period, Period]),
    erlang:send_after(max(cfg(gauge_ms, S), 10), self(), gauge),
    port_command(Port, io_lib:format("READY otp=~s schedulers=~b port=~b~n",
                                     [erlang:system_info(otp_release),
                                      erlang:system_info(schedulers_online), Bound])),
    loop(S#srv{lsock = L}).

%% Flushes stdout as soon as the mailbox is empty.
loop(S) ->
    receive
        Msg -> loop(handle(Msg, S))
    after 0 ->
        S1 = flush(S),
        receive Msg -> loop(handle(Msg, S1)) end
    end.

handle({Port, {data, {eol, <<"E">>}}}, S = #srv{port = Port, ending = none}) ->
    %% End of jobs: stop accepting; connections answer what is in flight,
    %% refuse what they read after, and close with 1001.
    gen_tcp:close(S#srv.lsock),
    [Pid ! drain || Pid <- maps:keys(S#srv.conns)],
    erlang:send_after(?DRAIN_MS, self(), drain_timeout),
    maybe_end(S#srv{ending = drain});
handle({Port, {data, {eol, <<"C">>}}}, S = #srv{port = Port}) ->
    cancel(S);
handle({Port, {data, {eol, Line}}}, #srv{port = Port}) ->
    error({bad_line, Line});
handle({Port, eof}, #srv{port = Port}) ->
    %% The agent is gone: stop at once.
    erlang:halt(0);
handle({accepted, Pid}, S) ->
    erlang:monitor(process, Pid),
    %% Accepted just before the listener closed: it ends with the others.
    case S#srv.ending of
        none -> ok;
        Ending -> Pid ! Ending
    end,
    %% Its `up` may have come first (another sender): keep that.
    S#srv{conns = maps:merge(#{Pid => accepted}, S#srv.conns)};
handle({up, Pid}, S) ->
    conns(S#srv{conns = (S#srv.conns)#{Pid => up}, open = S#srv.open + 1});
handle({down, Pid, Dropped}, S) ->
    conns(S#srv{conns = (S#srv.conns)#{Pid => down}, open = S#srv.open - 1,
                dropped = S#srv.dropped + Dropped});
handle({task, Job, Outcome, Read, Pickup, End}, S) ->
    task(Job, Outcome, Read, Pickup, End, S);
handle({'DOWN', _, process, Pid, _}, S) ->
    S1 = case maps:take(Pid, S#srv.conns) of
             %% Died with its socket open (a bug): counted dropped.
             {up, Rest} -> conns(S#srv{conns = Rest, open = S#srv.open - 1,
                                       dropped = S#srv.dropped + 1});
             {_, Rest} -> S#srv{conns = Rest};
             error -> S
         end,
    maybe_end(S1);
handle(drain_timeout, S = #srv{ending = drain}) ->
    %% Tasks still running: cancelled.
    cancel(S);
handle(cancel_timeout, S) ->
    finish(S);
handle({late, Us, At}, S) ->
    out(["L ", integer_to_binary(Us), $\n], S#srv{probe_last = At});
handle(gauge, S) ->
    erlang:send_after(max(cfg(gauge_ms, S), 10), self(), gauge),
    out(gauge_line(S), S);
handle({'EXIT', Port, _}, #srv{port = Port}) ->
    erlang:halt(0);
handle({'EXIT', _, normal}, S) ->
    %% The acceptor, once the listener closed.
    S;
handle({'EXIT', Pid, Reason}, _S) ->
    error({linked_process_died, Pid, Reason});
handle(_, S) ->
    S.

cancel(S = #srv{ending = cancel}) ->
    S;
cancel(S) ->
    catch gen_tcp:close(S#srv.lsock),
    [Pid ! cancel || Pid <- maps:keys(S#srv.conns)],
    erlang:send_after(?CANCEL_MS, self(), cancel_timeout),
    maybe_end(S#srv{ending = cancel}).

maybe_end(S = #srv{ending = E, conns = C}) when E =/= none, map_size(C) =:= 0 ->
    finish(S);
maybe_end(S) ->
    S.

%% One task read: its fields, how it ended, its times (µs since READY).
task(Job = {Id, Class, Work, Sleep, Crash, Intended}, Outcome, Read, Pickup, End, S) ->
    Sum = (S#srv.sum + cwbench_beam:job_digest(Job)) band 16#FFFFFFFFFFFFFFFF,
    S1 = S#srv{tasks = S#srv.tasks + 1, sum = Sum,
               cancelled = S#srv.cancelled + case Outcome of 4 -> 1; _ -> 0 end},
    out(["T ", lists:join($\s, [integer_to_binary(X)
                               || X <- [Id, Class, Work, Sleep, Crash, Intended,
                                        Outcome, Read, Pickup, End]]), $\n], S1).

conns(S) ->
    out(["W ", integer_to_binary(S#srv.open), $\s, integer_to_binary(S#srv.dropped), $\n], S).

gauge_line(S) ->
    InFlight = counters:get(persistent_term:get(cwbench_ws_in_flight), 1),
    Now = erlang:monotonic_time(microsecond) - S#srv.t0,
    ["G ", lists:join($\s, [integer_to_binary(X)
                           || X <- [0, max(InFlight, 0),
                                    erlang:system_info(process_count),
                                    erlang:statistics(total_run_queue_lengths),
                                    cwbench_beam:busy_us(S#srv.wall0, Now)]]), $\n].

finish(S0) ->
    S1 = out(gauge_line(S0), conns(S0)),
    S2 = out(io_lib:format("END ~16.16.0b ~b ~b 0~n", [S1#srv.sum, S1#srv.tasks, S1#srv.cancelled]),
             S1),
    _ = flush(S2),
    erlang:halt(0).

out(Line, S = #srv{out = O, nout = N}) ->
    S1 = S#srv{out = [O, Line], nout = N + 1},
    case N + 1 >= ?FLUSH_LINES of
        true -> flush(S1);
        false -> S1
    end.

flush(S = #srv{nout = 0}) ->
    S;
flush(S) ->
    port_command(S#srv.port, S#srv.out),
    S#srv{out = [], nout = 0}.

%% --- the acceptor --------------------------------------------------------------

acceptor(Srv, L, Cfg) ->
    case gen_tcp:accept(L) of
        {ok, Sock} ->
            Pid = spawn(?MODULE, conn, [Srv, Cfg]),
            Srv ! {accepted, Pid},
            case gen_tcp:controlling_process(Sock, Pid) of
                ok -> Pid ! {go, Sock};
                _ -> gen_tcp:close(Sock), exit(Pid, kill)
            end,
            acceptor(Srv, L, Cfg);
        {error, closed} ->
            ok;
        {error, _} ->
            %% Out of file descriptors, typically: a pause, not a busy loop.
            receive after 10 -> ok end,
            acceptor(Srv, L, Cfg)
    end.

%% --- a connection ----------------------------------------------------------------

-record(c, {
    srv,
    sock,
    limit,                % tasks in flight at most (the read-ahead bound)
    max,                  % max_message
    classes,
    buf = <<>>,
    frag = none,          % none | {Opcode, Acc}
    open = 0,
    tasks = #{},          % Ref => {Pid, Job, Form, Read}
    armed = false,        % {active, once} is set
    draining = false,
    up = true             % the socket is still open
}).

conn(Srv, Cfg) ->
    Sock = receive {go, S} -> S after ?HANDSHAKE_MS -> exit(normal) end,
    %% Answers are small and latency is the measurement: no Nagle delay; a
    %% 64 KiB send buffer, so a client that never reads blocks a write soon.
    _ = inet:setopts(Sock, [{nodelay, true}, {sndbuf, 65536}, {send_timeout, ?WRITE_MS}]),
    Deadline = erlang:monotonic_time(millisecond) + ?HANDSHAKE_MS,
    case handshake(Sock, <<>>, Deadline) of
        {ok, Rest} ->
            Srv ! {up, self()},
            C = #c{srv = Srv, sock = Sock, buf = Rest,
                   limit = max(maps:get(in_flight, Cfg, 1), 1),
                   max = maps:get(max_message, Cfg, 65536),
                   classes = maps:get(classes, Cfg, 1)},
            conn_loop(C);
        {error, _} ->
            gen_tcp:close(Sock)
    end.

%% The opening handshake (RFC 6455 §4.2): a GET with Upgrade: websocket and
%% a Sec-WebSocket-Key, answered 101 with its accept hash.
handshake(Sock, Acc, Deadline) ->
    case binary:split(Acc, <<"\r\n\r\n">>) of
        [Head, Rest] ->
            case accept_key(Head) of
                {ok, Key} ->
                    Accept = base64:encode(crypto:hash(sha, <<Key/binary, ?GUID/binary>>)),
                    case gen_tcp:send(Sock, [<<"HTTP/1.1 101 Switching Protocols\r\n"
                                               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                                               "Sec-WebSocket-Accept: ">>, Accept, <<"\r\n\r\n">>]) of
                        ok -> {ok, Rest};
                        {error, _} = E -> E
                    end;
                error ->
                    _ = gen_tcp:send(Sock, <<"HTTP/1.1 400 Bad Request\r\n"
                                         "Content-Length: 0\r\nConnection: close\r\n\r\n">>),
                    {error, bad_request}
            end;
        [_] when byte_size(Acc) > ?MAX_REQUEST ->
            {error, too_long};
        [_] ->
            Left = Deadline - erlang:monotonic_time(millisecond),
            case Left > 0 andalso gen_tcp:recv(Sock, 0, Left) of
                {ok, More} -> handshake(Sock, <<Acc/binary, More/binary>>, Deadline);
                _ -> {error, no_handshake}
            end
    end.

accept_key(Head) ->
    [Request | Lines] = binary:split(Head, <<"\r\n">>, [global]),
    Headers = [{string:lowercase(string:trim(K)), string:trim(V)}
               || L <- Lines, [K, V] <- [binary:split(L, <<":">>)]],
    Upgrade = proplists:get_value(<<"upgrade">>, Headers, <<>>),
    case {Request, string:lowercase(Upgrade), proplists:get_value(<<"sec-websocket-key">>, Headers)} of
        {<<"GET ", _/binary>>, <<"websocket">>, Key} when is_binary(Key), Key =/= <<>> -> {ok, Key};
        _ -> error
    end.

%% The connection's loop: parse what is buffered (while fewer than `limit`
%% tasks are open), read more only then ({active, once}, re-armed only
%% while there is room: that is the backpressure), collect task endings.
conn_loop(C0) ->
    case frames(C0) of
        {stop, End, C} -> ended(End, C);
        {ok, C} when C#c.draining, C#c.open =:= 0 ->
            ended({close, 1001, <<"the server is shutting down">>}, C);
        {ok, C} ->
            C1 = arm(C),
            Sock = C1#c.sock,
            receive
                {tcp, Sock, Data} ->
                    conn_loop(C1#c{buf = <<(C1#c.buf)/binary, Data/binary>>, armed = false});
                {tcp_closed, Sock} ->
                    ended({gone, C1#c.open > 0}, C1);
                {tcp_error, Sock, _} ->
                    ended({gone, true}, C1);
                {'DOWN', Ref, process, _, Reason} ->
                    case answered(Ref, Reason, C1) of
                        {ok, C2} -> conn_loop(C2);
                        {stop, End, C2} -> ended(End, C2)
                    end;
                drain ->
                    conn_loop(C1#c{draining = true});
                cancel ->
                    cancelled(C1)
            end
    end.

arm(C = #c{armed = false, open = Open, limit = L}) when Open < L ->
    ok = case inet:setopts(C#c.sock, [{active, once}]) of
             ok -> ok;
             %% Closed under us: the tcp_closed message follows.
             {error, _} -> ok
         end,
    C#c{armed = true};
arm(C) ->
    C.

%% Handles every complete frame in the buffer while the connection has room.
frames(C = #c{open = Open, limit = L}) when Open >= L ->
    {ok, C};
frames(C) ->
    case parse_frame(C#c.buf, C#c.max, frag_size(C#c.frag)) of
        more -> {ok, C};
        {error, Code, Why} -> {stop, {close, Code, Why}, C};
        {frame, Fin, Op, Payload, Rest} ->
            case frame_in(Fin, Op, Payload, C#c{buf = Rest}) of
                {ok, C1} -> frames(C1);
                Stop -> Stop
            end
    end.

frag_size(none) -> 0;
frag_size({_, Acc}) -> iolist_size(Acc).

%% One frame: control frames at once, data frames into messages.
frame_in(_, 9, Payload, C) ->
    write([frame(10, Payload)], C);
frame_in(_, 10, _, C) ->
    {ok, C};
frame_in(_, 8, Payload, C) ->
    %% The client closes: echo its code, then the TCP close is ours.
    Reply = case Payload of
                <<Code:16, _/binary>> -> <<Code:16>>;
                _ -> <<>>
            end,
    _ = gen_tcp:send(C#c.sock, frame(8, Reply)),
    {stop, {gone, C#c.open > 0}, C};
frame_in(_, 0, _, C = #c{frag = none}) ->
    {stop, {close, 1002, <<"protocol error: a continuation frame with no message to continue">>}, C};
frame_in(Fin, 0, Payload, C = #c{frag = {Op, Acc}}) ->
    case Fin of
        1 -> message(Op, iolist_to_binary([Acc, Payload]), C#c{frag = none});
        0 -> {ok, C#c{frag = {Op, [Acc, Payload]}}}
    end;
frame_in(_, Op, _, C = #c{frag = {_, _}}) when Op =:= 1; Op =:= 2 ->
    {stop, {close, 1002, <<"protocol error: a new message inside a fragmented one">>}, C};
frame_in(1, Op, Payload, C) when Op =:= 1; Op =:= 2 ->
    message(Op, Payload, C);
frame_in(0, Op, Payload, C) when Op =:= 1; Op =:= 2 ->
    {ok, C#c{frag = {Op, Payload}}};
frame_in(_, Op, _, C) ->
    {stop, {close, 1002, iolist_to_binary(io_lib:format("protocol error: unknown opcode ~b", [Op]))}, C}.

message(2, Bin, C) ->
    task_in(decode_task(Bin), binary, C);
message(1, Text, C) ->
    case unicode:characters_to_binary(Text, utf8, utf8) of
        Text -> task_in(json_task(Text), text, C);
        _ -> {stop, {close, 1007, <<"text frame is not UTF-8">>}, C}
    end.

%% A task read: counted by its ending; run in a process of its own.
task_in({error, Code, Why}, _, C) ->
    {stop, {close, Code, iolist_to_binary(Why)}, C};
task_in({ok, {_, Class, _, _, _, _}}, _, C = #c{classes = N}) when Class >= N ->
    {stop, {close, 1007, iolist_to_binary(io_lib:format("invalid class: ~b (the run has ~b)",
                                                         [Class, N]))}, C};
task_in({ok, Job}, Form, C = #c{draining = true}) ->
    Read = now_us(),
    C#c.srv ! {task, Job, 3, Read, Read, Read},
    write([answer(element(1, Job), 3, 0, 0, Form)], C);
task_in({ok, Job = {Id, Class, Work, Sleep, Crash, _}}, Form, C) ->
    Read = now_us(),
    {Pid, Ref} = spawn_monitor(fun() -> run_task(Id, Class, Work, Sleep, Crash =:= 1, Read) end),
    counters:add(persistent_term:get(cwbench_ws_in_flight), 1, 1),
    {ok, C#c{open = C#c.open + 1, tasks = (C#c.tasks)#{Ref => {Pid, Job, Form, Read}}}}.

%% A task's process: the workload's own job execution (CPU step, crash,
%% sleep, timeout); an injected crash is a real error, which the
%% connection learns of from the monitor.
run_task(Id, Class, Work, Sleep, Crash, Read) ->
    case cwbench_beam_worker:run(Id, Class, Work, Sleep, Crash, Read, Read) of
        {crashed, Rec} -> erlang:error({injected_crash, Rec});
        Ran -> exit({ran, Ran})
    end.

%% A task process ended: its answer (while the socket is up) and its record.
answered(Ref, Reason, C) ->
    case maps:take(Ref, C#c.tasks) of
        error -> {ok, C};
        {{_, Job, Form, Read}, Tasks} ->
            counters:sub(persistent_term:get(cwbench_ws_in_flight), 1, 1),
            {Outcome, Pickup, End} =
                case Reason of
                    {ran, {_, Rec}} -> {element(3, Rec), element(6, Rec), element(7, Rec)};
                    {{injected_crash, Rec}, _} -> {1, element(6, Rec), element(7, Rec)};
                    %% Not an injected crash (a bug): counted crashed.
                    _ -> {1, Read, now_us()}
                end,
            C#c.srv ! {task, Job, Outcome, Read, Pickup, End},
            C1 = C#c{tasks = Tasks, open = C#c.open - 1},
            case C1#c.up of
                true ->
                    write([answer(element(1, Job), Outcome, (Pickup - Read) * 1000,
                                  (End - Pickup) * 1000, Form)], C1);
                false -> {ok, C1}
            end
    end.

answer(Id, Outcome, QueueNs, ServiceNs, binary) ->
    frame(2, <<2, Id:64/little, Outcome, QueueNs:64/little, ServiceNs:64/little>>);
answer(Id, Outcome, QueueNs, ServiceNs, text) ->
    Name = element(Outcome + 1, {<<"completed">>, <<"crashed">>, <<"timed_out">>, <<"refused">>}),
    frame(1, iolist_to_binary(io_lib:format(
                                "{\"id\":~b,\"outcome\":\"~s\",\"queue_wait_ns\":~b,\"service_ns\":~b}",
                                [Id, Name, QueueNs, ServiceNs]))).

%% Writes frames; a client that takes none for WRITE_MS is not reading.
write(Frames, C) ->
    case gen_tcp:send(C#c.sock, Frames) of
        ok -> {ok, C};
        {error, timeout} -> {stop, unread, C};
        {error, _} -> {stop, {gone, true}, C}
    end.

%% How a connection's socket ends; then its tasks still run to their end
%% and are counted, unanswered.
ended(End, C) ->
    Dropped = case End of
                  {close, 1001, _} -> 0;
                  {close, _, _} -> 1;
                  unread -> 1;
                  {gone, Lost} -> case Lost of true -> 1; false -> 0 end
              end,
    case End of
        {close, Code, Why} -> close(Code, Why, C);
        unread ->
            %% The send buffer is full: a close frame gets 1 s, then the
            %% socket goes.
            _ = inet:setopts(C#c.sock, [{send_timeout, ?CLOSE_MS}]),
            _ = gen_tcp:send(C#c.sock, close_frame(1008, <<"answers unread: none could be written for 2 s">>)),
            %% A close waits for queued output to go; this will not.
            _ = inet:setopts(C#c.sock, [{linger, {true, 0}}]);
        {gone, _} -> ok
    end,
    gen_tcp:close(C#c.sock),
    C#c.srv ! {down, self(), Dropped},
    finish_tasks(C#c{up = false}).

%% Sends our close frame and waits (bounded) for the client's.
close(Code, Why, C) ->
    case gen_tcp:send(C#c.sock, close_frame(Code, Why)) of
        ok ->
            _ = inet:setopts(C#c.sock, [{active, false}]),
            Buf = drain_mailbox(C#c.sock, C#c.buf),
            await_close(C#c.sock, Buf, erlang:monotonic_time(millisecond) + ?CLOSE_MS);
        _ -> ok
    end.

drain_mailbox(Sock, Buf) ->
    receive {tcp, Sock, D} -> drain_mailbox(Sock, <<Buf/binary, D/binary>>)
    after 0 -> Buf
    end.

await_close(Sock, Buf, Deadline) ->
    case skip_to_close(Buf) of
        true -> ok;
        Rest ->
            Left = Deadline - erlang:monotonic_time(millisecond),
            case Left > 0 andalso gen_tcp:recv(Sock, 0, Left) of
                {ok, D} -> await_close(Sock, <<Rest/binary, D/binary>>, Deadline);
                _ -> ok
            end
    end.

%% true once a close frame is in the buffer; else what is left to parse.
skip_to_close(Buf) ->
    case parse_frame(Buf, 1 bsl 62, 0) of
        {frame, _, 8, _, _} -> true;
        {frame, _, _, _, Rest} -> skip_to_close(Rest);
        more -> Buf;
        {error, _, _} -> true
    end.

%% The socket is gone: wait for the tasks still running, report them.
finish_tasks(C = #c{open = 0}) ->
    C;
finish_tasks(C) ->
    receive
        {'DOWN', Ref, process, _, Reason} ->
            {ok, C1} = answered(Ref, Reason, C),
            finish_tasks(C1);
        cancel ->
            cancelled(C)
    end.

%% The run is cancelled: every task in flight counts cancelled; the socket
%% drops without a close handshake.
cancelled(C) ->
    Now = now_us(),
    maps:foreach(fun(Ref, {Pid, Job, _, Read}) ->
                         erlang:demonitor(Ref, [flush]),
                         exit(Pid, kill),
                         counters:sub(persistent_term:get(cwbench_ws_in_flight), 1, 1),
                         C#c.srv ! {task, Job, 4, Read, Read, Now}
                 end, C#c.tasks),
    case C#c.up of
        true ->
            gen_tcp:close(C#c.sock),
            C#c.srv ! {down, self(), 0};
        false -> ok
    end,
    exit(normal).

now_us() ->
    erlang:monotonic_time(microsecond) - persistent_term:get(cwbench_t0).

%% --- framing (RFC 6455 §5) --------------------------------------------------------

%% One client frame from the front of `Buf`: `more` when incomplete. Every
%% client frame must be masked; a data frame may not take the message past
%% `Max` bytes (with `Have` bytes of it already read).
parse_frame(<<Fin:1, Rsv:3, Op:4, Mask:1, L7:7, Rest/binary>>, Max, Have) ->
    if
        Rsv =/= 0 -> {error, 1002, <<"protocol error: reserved bits set">>};
        Mask =:= 0 -> {error, 1002, <<"protocol error: unmasked client frame">>};
        true -> frame_length(Fin, Op, L7, Rest, Max, Have)
    end;
parse_frame(_, _, _) ->
    more.

frame_length(Fin, Op, 126, <<L:16, Rest/binary>>, Max, Have) ->
    frame_body(Fin, Op, L, Rest, Max, Have);
frame_length(Fin, Op, 127, <<0:1, L:63, Rest/binary>>, Max, Have) ->
    frame_body(Fin, Op, L, Rest, Max, Have);
frame_length(_, _, 127, <<1:1, _:63, _/binary>>, _, _) ->
    {error, 1002, <<"protocol error: frame length has its top bit set">>};
frame_length(_, _, L7, _, _, _) when L7 >= 126 ->
    more;
frame_length(Fin, Op, L, Rest, Max, Have) ->
    frame_body(Fin, Op, L, Rest, Max, Have).

frame_body(Fin, Op, L, _, _, _) when Op >= 8, Fin =:= 0; Op >= 8, L > 125 ->
    {error, 1002, <<"protocol error: a fragmented or oversized control frame">>};
frame_body(_, Op, L, _, Max, Have) when Op < 8, L + Have > Max ->
    {error, 1009, iolist_to_binary(io_lib:format("message too big: ~b bytes (max_message ~b)",
                                                 [L + Have, Max]))};
frame_body(Fin, Op, L, Bin, _, _) ->
    case Bin of
        <<Key:4/binary, Payload:L/binary, Rest/binary>> ->
            {frame, Fin, Op, unmask(Payload, Key), Rest};
        _ -> more
    end.

unmask(<<>>, _) ->
    <<>>;
unmask(Payload, Key) ->
    N = byte_size(Payload),
    Mask = binary:part(binary:copy(Key, (N + 3) div 4), 0, N),
    crypto:exor(Payload, Mask).

%% A server frame: final, unmasked.
frame(Op, Payload) ->
    L = byte_size(Payload),
    Len = if
              L < 126 -> <<L>>;
              L < 65536 -> <<126, L:16>>;
              true -> <<127, L:64>>
          end,
    [<<1:1, 0:3, Op:4>>, Len, Payload].

close_frame(Code, Why) ->
    %% A control frame's payload is at most 125 bytes: the code and 123.
    frame(8, <<Code:16, (truncate_utf8(iolist_to_binary(Why), 123))/binary>>).

truncate_utf8(B, N) when byte_size(B) =< N -> B;
truncate_utf8(B, N) ->
    Cut = binary:part(B, 0, N),
    case unicode:characters_to_binary(Cut) of
        Cut -> Cut;
        _ -> truncate_utf8(B, N - 1)
    end.

%% --- the task, in either form ---------------------------------------------------

%% A binary task frame (30 bytes): {ok, {Id, Class, Work, Sleep, Crash, Intended}}.
decode_task(<<>>) ->
    {error, 1007, <<"empty frame">>};
decode_task(<<T, _/binary>>) when T =/= 1 ->
    {error, 1003, io_lib:format("unknown frame type 0x~2.16.0b (task = 0x01)", [T])};
decode_task(B) when byte_size(B) < 30 ->
    {error, 1007, io_lib:format("task frame is ~b bytes, expected 30", [byte_size(B)])};
decode_task(B) when byte_size(B) > 30 ->
    {error, 1008, io_lib:format("unknown task fields: ~b bytes after the 30-byte task",
                                [byte_size(B) - 30])};
decode_task(<<1, Id:64/little, Class:32/little, Work:32/little, Sleep:32/little,
              Flags, Intended:64/little>>) ->
    case Flags band 16#FE of
        0 -> {ok, {Id, Class, Work, Sleep, Flags band 1, Intended}};
        F -> {error, 1008, io_lib:format("unknown task fields: flag bits 0x~2.16.0b", [F])}
    end.

%% The JSON text form: exactly the six fields, in any order. A strict
%% parser of this one flat object (OTP 25 has no json module).
json_task(Text) ->
    try
        Fields = json_object(ws(Text)),
        {ok, list_to_tuple([field(K, Fields) || K <- [<<"id">>, <<"class">>, <<"work_units">>,
                                                      <<"sleep_us">>, <<"crash">>,
                                                      <<"intended_us">>]])}
    catch
        throw:{json, Code, Why} -> {error, Code, Why}
    end.

invalid(Fmt, Args) ->
    throw({json, 1007, ["invalid task: ", io_lib:format(Fmt, Args)]}).

%% Field => {Max, Kind}: integers in 0..Max, or a boolean.
json_field(<<"id">>) -> {16#FFFFFFFFFFFFFFFF, int};
json_field(<<"class">>) -> {16#FFFFFFFF, int};
json_field(<<"work_units">>) -> {16#FFFFFFFF, int};
json_field(<<"sleep_us">>) -> {16#FFFFFFFF, int};
json_field(<<"crash">>) -> {1, bool};
json_field(<<"intended_us">>) -> {16#FFFFFFFFFFFFFFFF, int};
json_field(_) -> unknown.

field(K, Fields) ->
    case maps:find(K, Fields) of
        {ok, V} -> V;
        error -> invalid("missing field `~s`", [K])
    end.

json_object(<<${, Rest/binary>>) ->
    case ws(Rest) of
        <<$}, After/binary>> -> json_end(ws(After)), #{};
        R -> json_members(R, #{})
    end;
json_object(_) ->
    invalid("expected a JSON object", []).

json_members(<<$", Rest/binary>>, Acc) ->
    {Key, R1} = json_key(Rest, <<>>),
    Kind = case json_field(Key) of
               unknown -> throw({json, 1008, ["unknown task fields: unknown field `", Key, "`"]});
               Known -> Known
           end,
    maps:is_key(Key, Acc) andalso invalid("duplicate field `~s`", [Key]),
    R2 = case ws(R1) of
             <<$:, R/binary>> -> ws(R);
             _ -> invalid("expected `:` after `~s`", [Key])
         end,
    {Value, R3} = json_value(Kind, Key, R2),
    Acc1 = Acc#{Key => Value},
    case ws(R3) of
        <<$,, R4/binary>> -> json_members(ws(R4), Acc1);
        <<$}, R4/binary>> -> json_end(ws(R4)), Acc1;
        _ -> invalid("expected `,` or `}` after `~s`", [Key])
    end;
json_members(_, _) ->
    invalid("key must be a string", []).

json_key(<<$", Rest/binary>>, Acc) -> {Acc, Rest};
json_key(<<C, Rest/binary>>, Acc) when C >= 16#20, C =/= $\\ -> json_key(Rest, <<Acc/binary, C>>);
json_key(_, _) -> invalid("a key with an escape, a control character or no end", []).

json_value({_, bool}, _, <<"true", R/binary>>) -> {1, R};
json_value({_, bool}, _, <<"false", R/binary>>) -> {0, R};
json_value({_, bool}, K, _) -> invalid("`~s` must be true or false", [K]);
json_value({_, int}, K, <<"0", D, _/binary>>) when D >= $0, D =< $9 ->
    invalid("`~s` has a leading zero", [K]);
json_value({Max, int}, K, B = <<D, _/binary>>) when D >= $0, D =< $9 ->
    {Digits, R} = json_digits(B, <<>>),
    case R of
        <<C, _/binary>> when C =:= $.; C =:= $e; C =:= $E ->
            invalid("`~s` must be an integer", [K]);
        _ -> ok
    end,
    N = binary_to_integer(Digits),
    N =< Max orelse invalid("`~s` = ~b: must be in 0..=~b", [K, N, Max]),
    {N, R};
json_value({_, int}, K, _) ->
    invalid("`~s` must be an unsigned integer", [K]).

json_digits(<<D, R/binary>>, Acc) when D >= $0, D =< $9 -> json_digits(R, <<Acc/binary, D>>);
json_digits(R, Acc) -> {Acc, R}.

json_end(<<>>) -> ok;
json_end(_) -> invalid("trailing characters after the object", []).

ws(<<C, R/binary>>) when C =:= $\s; C =:= $\t; C =:= $\n; C =:= $\r -> ws(R);
ws(B) -> B.
