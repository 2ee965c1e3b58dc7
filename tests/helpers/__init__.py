"""What many tests share: fake clocks, image bytes, waiting on a condition, what a run
left behind (the requests the sandbox saw, the rows the history kept), and a scripted
API for the replies the sandbox has no fault for."""
