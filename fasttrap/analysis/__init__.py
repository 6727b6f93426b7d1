"""What is read off the dynamics: traps and trapping times, power laws, aging, gradient noise."""
