// Package prockit is the process kit of discoverd's black-box tests (the
// smoke tests of package test), its benchmark (test/bench) and its fault
// suite (test/fault): everything that runs real processes outside the test
// binary goes through it.
//
// It owns:
//   - building: ./cmd/discoverd once per tag set per process, into a
//     directory the process owns (Build, removed by Cleanup) or one it is
//     given (BuildInto), any other package on demand (BuildPackage), from
//     the module root (ModuleRoot);
//   - processes: each started in its own process group with its output
//     appended to a log, recorded in one pid directory while it runs, and
//     signalled only by its own PID (Start, Proc);
//   - leftovers: the processes and build directories of runs that died
//     before their cleanups ran, removed when the next run starts
//     (CleanLeftovers; RunTests is the TestMain that does it and Cleanup);
//   - the flags every test cluster passes to `discoverd server`
//     (RaftFlags, ServerArgs).
package prockit
