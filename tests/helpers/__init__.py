"""What many tests share, each in one place: `clocks` (a fake clock), `images` (PNG
bytes), `waiting` (waiting on conditions, and a guard against hangs), `records` (the
requests the sandbox saw, the rows the history kept, the sandbox driven directly),
`scripted` (an API for the replies the sandbox's faults cannot make), `terminal` (a
real terminal in tmux) and `polling_sim` (a simulation of waiting on many tasks)."""
