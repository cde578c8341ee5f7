"""The gRPC Recommender service and the request pipeline."""
