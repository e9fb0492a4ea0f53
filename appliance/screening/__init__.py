"""The screening core: pure functions and classes, no I/O, no clock, no asyncio.

Frames go in with their own time; states and results come out. The daemon around this
package reads the sensor, publishes ``screening.state`` / ``screening.result`` and stores
results; the bench and ``appliance replay`` drive the same machine from recordings.

Nothing is imported with the package itself: the screen and the setup page import small
modules of it (settings, units, calstore, events), and the numpy core with them would cost
each of those daemons megabytes of RSS it never uses. Import from the modules.
"""
