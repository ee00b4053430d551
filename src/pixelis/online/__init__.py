"""Online test-time learning (Pixel TTRL): experience buffer, trajectory voting, inference engine, update worker."""
