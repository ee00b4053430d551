"""In-process benchmarks of Pixelis' hot pieces (`pixelis bench micro`); timing scripts live in benchmarks/."""
